// The frame of a form whose errors come by field (`useFieldAction`): a panel with the action's
// messages above a form, and the form's submit button at its end.
import type { ReactNode } from "react";
import { Button, Notice, Panel } from "./components";
import type { FieldAction } from "./formErrors";
import { otherErrors } from "./formErrors";

/** A panel titled `title`: the action's error, the messages for fields the form does not show
 * (`shown` are those it shows at the fields), its success message and any other `notices`; then
 * the form (no browser validation: the fields show the checks), its fields as `children`, and a
 * `submit` button, disabled while the action runs or when not `ready`. */
export function FormPanel({
  title,
  action,
  shown,
  notices,
  onSubmit,
  submit,
  ready = true,
  children,
}: {
  title: ReactNode;
  action: Pick<FieldAction, "busy" | "error" | "done" | "errors">;
  shown: readonly string[];
  notices?: ReactNode;
  /** Called on submit, without the page load. */
  onSubmit: () => void;
  /** The submit button's label. */
  submit: ReactNode;
  ready?: boolean;
  children: ReactNode;
}) {
  return (
    <Panel title={title}>
      <Notice>{action.error}</Notice>
      {otherErrors(action.errors, shown).map((m) => <Notice key={m}>{m}</Notice>)}
      <Notice tone="success">{action.done}</Notice>
      {notices}
      <form
        noValidate
        onSubmit={(event) => {
          event.preventDefault();
          onSubmit();
        }}
      >
        {children}
        <Button type="submit" variant="primary" disabled={action.busy || !ready}>
          {submit}
        </Button>
      </form>
    </Panel>
  );
}
