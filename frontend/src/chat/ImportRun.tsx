// Import a run exported from Steerlab (here or elsewhere): it becomes a finished run in a new
// conversation, which the page then opens (replay it there to redo it on this site).
import { useState } from "react";
import { useNavigate } from "react-router";
import { api, unwrap } from "../api/client";
import { useAction } from "../api/useAction";
import { toFormData } from "../library/shared";
import { Button, Field, Notice, Panel } from "../ui/components";

export function ImportRun({ onImported }: { onImported: () => void }) {
  const navigate = useNavigate();
  const action = useAction();
  const [file, setFile] = useState<File | null>(null);

  const submit = () => {
    if (!file) {
      action.fail("Choose a run export (.zip) to import.");
      return;
    }
    void action.run(async () => {
      const run = await unwrap(
        api.POST("/api/runs/import", { body: { file: file.name }, bodySerializer: () => toFormData({}, file) }),
      );
      onImported();
      void navigate(`/chat/${run.conversation_id}`);
    });
  };

  return (
    <Panel title="Import a run">
      <Notice>{action.error}</Notice>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          submit();
        }}
      >
        <Field label="Run export" hint="A .zip from a run's Export button. It opens as a new conversation.">
          {(id, describedBy) => (
            <input
              id={id}
              type="file"
              accept=".zip,application/zip"
              aria-describedby={describedBy}
              onChange={(e) => { setFile(e.target.files?.[0] ?? null); }}
            />
          )}
        </Field>
        <Button type="submit" disabled={action.busy}>
          Import the run
        </Button>
      </form>
    </Panel>
  );
}
