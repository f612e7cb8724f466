// A form's server errors by field (an `ApiError`'s `fields`): shown at their fields, the rest
// above the form. `useFieldAction` is `useAction` that also keeps them.
import { useState } from "react";
import { ApiError } from "../api/client";
import type { Action } from "../api/useAction";
import { useAction } from "../api/useAction";

export type FieldErrors = Record<string, string[]>;

export const fieldsOf = (exc: unknown): FieldErrors => (exc instanceof ApiError ? exc.fields : {});

/** The messages for `names` (joined), or undefined when there are none (`Field`'s `error`). */
export function fieldError(errors: FieldErrors, ...names: string[]): string | undefined {
  const messages = names.flatMap((name) => errors[name] ?? []);
  return messages.length > 0 ? messages.join(" ") : undefined;
}

/** The messages of fields the form does not show (`__all__` and unknown keys), one line each. */
export function otherErrors(errors: FieldErrors, shown: readonly string[]): string[] {
  return Object.entries(errors)
    .filter(([key]) => !shown.includes(key))
    .flatMap(([key, messages]) => messages.map((m) => (key && key !== "__all__" ? `${key}: ${m}` : m)));
}

export interface FieldAction extends Action {
  errors: FieldErrors;
  /** Client-side checks: shows `errors` at their fields, and a summary as the action's error. */
  invalid: (errors: FieldErrors) => void;
}

/** `useAction` whose failures keep the server's field errors until the next run succeeds. */
export function useFieldAction(): FieldAction {
  const [errors, setErrors] = useState<FieldErrors>({});
  const action = useAction({
    onError: (exc) => {
      setErrors(fieldsOf(exc));
    },
  });
  const run = (work: () => Promise<unknown>) =>
    action.run(async () => {
      const result = await work();
      setErrors({});
      return result;
    });
  const submit = (work: () => Promise<unknown>) => (event: { preventDefault: () => void }) => {
    event.preventDefault();
    void run(work);
  };
  const invalid = (next: FieldErrors) => {
    setErrors(next);
    action.fail("Check the highlighted fields.");
  };
  return { ...action, run, submit, errors, invalid };
}
