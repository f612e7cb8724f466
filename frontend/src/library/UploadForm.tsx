// The upload form's skeleton, shared by the library's tabs: Name, the tab's own fields,
// Description, visibility and team, the file, and the submit with its busy / error / done state.
import { useRef, useState } from "react";
import type { ReactNode, RefObject } from "react";
import { useAction } from "../api/useAction";
import { Button, Field, Notice, Panel } from "../ui/components";
import type { Team, Visibility } from "./shared";
import { SharingFields, sharingBody, useSharing } from "./sharing";

/** The fields every upload sends (`file` is the file's name: the multipart body carries the file). */
export interface UploadFields {
  name: string;
  description: string;
  visibility: Visibility;
  team: number | null;
  file: string;
}

/** "Upload a {what}": `upload` posts the fields (with the tab's own, rendered as `children` between
 * Name and Description) and resets those it wants reset; then the form clears its own fields. */
export function UploadForm<T extends { name: string }>({
  what,
  teams,
  fileHint,
  accept,
  ready = true,
  upload,
  describe = (created) => `Uploaded the ${what} “${created.name}”.`,
  onUploaded,
  children,
}: {
  what: string;
  teams: Team[];
  fileHint: ReactNode;
  accept: string;
  /** False keeps the submit disabled (e.g. no model to upload for). */
  ready?: boolean;
  upload: (fields: UploadFields, file: File) => Promise<T>;
  /** The success message. */
  describe?: (created: T) => string;
  onUploaded: (created: T) => void;
  children: ReactNode;
}) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const sharing = useSharing();
  const [file, setFile] = useState<File | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const action = useAction();

  const submit = () => {
    if (!file) {
      action.fail("Choose a file to upload.");
      return;
    }
    void action.run(async () => {
      const fields = { name, description, ...sharingBody(sharing), file: file.name };
      const created = await upload(fields, file);
      setName("");
      setDescription("");
      setFile(null);
      if (fileInput.current) fileInput.current.value = "";
      onUploaded(created);
      return describe(created);
    });
  };

  return (
    <Panel title={`Upload a ${what}`}>
      <Notice>{action.error}</Notice>
      <Notice tone="success">{action.done}</Notice>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          submit();
        }}
      >
        <Field label="Name">
          {(id) => <input id={id} type="text" required maxLength={100} value={name} onChange={(e) => { setName(e.target.value); }} />}
        </Field>
        {children}
        <Field label="Description">
          {(id) => <textarea id={id} rows={2} value={description} onChange={(e) => { setDescription(e.target.value); }} />}
        </Field>
        <SharingFields sharing={sharing} teams={teams} />
        <FileField hint={fileHint} accept={accept} inputRef={fileInput} onFile={setFile} />
        <Button type="submit" variant="primary" disabled={action.busy || !ready}>
          {`Upload ${what}`}
        </Button>
      </form>
    </Panel>
  );
}

/** A labelled `<input type="file">`; the chosen file goes to `onFile`. The form checks that one was
 * chosen itself (a `required` file input cannot be satisfied in jsdom tests). */
function FileField({
  label = "File",
  hint,
  accept,
  inputRef,
  onFile,
}: {
  label?: string;
  hint: ReactNode;
  accept: string;
  inputRef: RefObject<HTMLInputElement | null>;
  onFile: (file: File | null) => void;
}) {
  return (
    <Field label={label} hint={hint}>
      {(id, describedBy) => (
        <input
          id={id}
          ref={inputRef}
          type="file"
          accept={accept}
          aria-required="true"
          aria-describedby={describedBy}
          onChange={(e) => { onFile(e.target.files?.[0] ?? null); }}
        />
      )}
    </Field>
  );
}

