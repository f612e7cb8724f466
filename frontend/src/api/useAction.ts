// The state around an async action (a form's submit, a delete button): busy while it runs, the
// error if it failed, and the message it returned if it succeeded.
import { useState } from "react";
import { errorMessage } from "./client";

export interface Action {
  busy: boolean;
  /** The failure's message ("" when none). */
  error: string;
  /** The success message `work` returned ("" when none). */
  done: string;
  /** Clears the messages and runs `work`, busy until it settles. A string `work` resolves to is
   * the success message (anything else leaves none); what it throws becomes `error` (and goes to
   * `onError`). */
  run: (work: () => Promise<unknown>) => Promise<void>;
  /** A form's `onSubmit`: no page load, then `run(work)`. */
  submit: (work: () => Promise<unknown>) => (event: { preventDefault: () => void }) => void;
  /** Shows `message` as the error without running anything (a check before `run`). */
  fail: (message: string) => void;
}

interface State {
  busy: boolean;
  error: string;
  done: string;
}

const IDLE: State = { busy: false, error: "", done: "" };

/** `onError` sees what a failed `work` threw, e.g. for an `ApiError`'s `fields`. */
export function useAction({ onError }: { onError?: (exc: unknown) => void } = {}): Action {
  const [state, setState] = useState<State>(IDLE);

  const run = async (work: () => Promise<unknown>) => {
    setState({ busy: true, error: "", done: "" });
    try {
      const result = await work();
      setState({ busy: false, error: "", done: typeof result === "string" ? result : "" });
    } catch (exc) {
      onError?.(exc);
      setState({ busy: false, error: errorMessage(exc), done: "" });
    }
  };

  const submit = (work: () => Promise<unknown>) => (event: { preventDefault: () => void }) => {
    event.preventDefault();
    void run(work);
  };

  const fail = (message: string) => {
    setState((prev) => ({ ...prev, error: message }));
  };

  return { ...state, run, submit, fail };
}
