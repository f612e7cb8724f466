// A read-only value (a new secret, an invitation link) with a button that copies it.
import { useState } from "react";
import type { ReactNode } from "react";
import { Button, Field } from "../ui/components";

export function CopyField({
  label,
  value,
  copyLabel,
  hint,
}: {
  label: string;
  value: string;
  copyLabel: string;
  hint?: ReactNode;
}) {
  const [status, setStatus] = useState("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      setStatus("Copied.");
    } catch {
      setStatus("Could not copy: select the text and copy it yourself.");
    }
  };
  return (
    <div>
      <Field label={label} hint={hint}>
        {(id, describedBy) => (
          <input
            id={id}
            type="text"
            readOnly
            className="mono"
            aria-describedby={describedBy}
            value={value}
            onFocus={(e) => {
              e.target.select();
            }}
          />
        )}
      </Field>
      <Button small onClick={() => { void copy(); }}>{copyLabel}</Button>{" "}
      <span className="meta" role="status">{status}</span>
    </div>
  );
}
