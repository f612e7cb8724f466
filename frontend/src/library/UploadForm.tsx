// The upload form's skeleton, shared by the library's tabs: Name, the tab's own fields,
// Description, visibility and team, the file, and the submit with its busy / error / done state.
import { useRef, useState } from "react";
import type { ReactNode, RefObject } from "react";
import { useAction } from "../api/useAction";
import { Button, Field, Notice, Panel } from "../ui/components";
import type { Team, Visibility } from "./shared";
import { isVisibility } from "./shared";

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
  const [visibility, setVisibility] = useState<Visibility>("private");
  const [team, setTeam] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const action = useAction();

  const submit = () => {
    if (!file) {
      action.fail("Choose a file to upload.");
      return;
    }
    void action.run(async () => {
      const fields = { name, description, visibility, team: team === "" ? null : Number(team), file: file.name };
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
        <SharingFields visibility={visibility} onVisibility={setVisibility} team={team} onTeam={setTeam} teams={teams} />
        <FileField hint={fileHint} accept={accept} inputRef={fileInput} onFile={setFile} />
        <Button type="submit" variant="primary" disabled={action.busy || !ready}>
          {`Upload ${what}`}
        </Button>
      </form>
    </Panel>
  );
}

/** Visibility and team selects of an upload form. */
export function SharingFields({
  visibility,
  onVisibility,
  team,
  onTeam,
  teams,
}: {
  visibility: Visibility;
  onVisibility: (value: Visibility) => void;
  team: string;
  onTeam: (value: string) => void;
  teams: Team[];
}) {
  return (
    <div className="form-row">
      <Field label="Visibility">
        {(id) => (
          <select
            id={id}
            value={visibility}
            onChange={(e) => {
              if (isVisibility(e.target.value)) onVisibility(e.target.value);
            }}
          >
            <option value="private">Private (only me)</option>
            <option value="team">Team</option>
            <option value="public">Public (everyone)</option>
          </select>
        )}
      </Field>
      <Field label="Team" hint="Needed for team visibility.">
        {(id, describedBy) => (
          <select id={id} aria-describedby={describedBy} value={team} onChange={(e) => { onTeam(e.target.value); }}>
            <option value="">No team</option>
            {teams.map((t) => (
              <option key={t.id} value={t.id}>{t.name}</option>
            ))}
          </select>
        )}
      </Field>
    </div>
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

