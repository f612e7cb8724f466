// A line diff of two recipe specs (jsdiff over pretty JSON).
import { diffLines } from "diff";

export function SpecDiff({ before, after, label }: { before: string; after: string; label: string }) {
  const parts = diffLines(before, after);
  const changed = parts.some((p) => p.added || p.removed);
  return (
    // A scrollable region: focusable so the keyboard can scroll it.
    // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex
    <pre className="diff" aria-label={label} tabIndex={0}>
      {changed
        ? parts.map((part, i) => {
            const cls = part.added ? "add" : part.removed ? "del" : "same";
            const mark = part.added ? "+ " : part.removed ? "- " : "  ";
            const lines = part.value.replace(/\n$/, "").split("\n");
            return (
              <span key={i} className={cls}>
                {lines.map((line) => mark + line).join("\n")}
              </span>
            );
          })
        : "No differences."}
    </pre>
  );
}
