// How much the board's probes agree, pairwise: the correlation of their pooled scores or Cohen's
// kappa of their decisions, as a tinted table with the numbers.
import { useState } from "react";
import { Button } from "../ui/components";
import type { Evaluation } from "./evaluation";
import { agreementTint } from "./evaluation";

const MEASURES = [
  ["correlation", "Correlation"],
  ["kappa", "Cohen's kappa"],
] as const;
type Measure = (typeof MEASURES)[number][0];

export function AgreementMatrix({ evaluation }: { evaluation: Evaluation }) {
  const [measure, setMeasure] = useState<Measure>("correlation");
  const matrix = evaluation.agreement[measure];
  const label = MEASURES.find(([key]) => key === measure)?.[1] ?? measure;
  const probes = evaluation.probes;
  return (
    <div>
      <div role="group" aria-label="Agreement measure" className="form-row">
        {MEASURES.map(([key, text]) => (
          <Button key={key} small variant={key === measure ? "primary" : "secondary"} aria-pressed={key === measure} onClick={() => { setMeasure(key); }}>
            {text}
          </Button>
        ))}
      </div>
      <p className="meta">
        {measure === "correlation"
          ? "Pearson correlation of the probes' pooled scores over the examples."
          : "Cohen's kappa of the probes' decisions (score above zero): 1 is full agreement, 0 is chance."}
      </p>
      <div className="table-scroll">
        <table className="matrix" aria-label={`Agreement: ${label}`} data-measure={measure}>
          <thead>
            <tr>
              <td />
              {probes.map((p) => (
                <th key={p.id} scope="col" title={p.name}>{p.public_id}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {probes.map((row, i) => (
              <tr key={row.id}>
                <th scope="row">
                  {row.public_id} <span className="meta">{row.name}</span>
                </th>
                {probes.map((col, j) => {
                  const value = matrix[i]?.[j] ?? null;
                  return (
                    <td key={col.id} style={{ background: agreementTint(value) }}>
                      {value === null ? "—" : value.toFixed(2)}
                    </td>
                  );
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="heat-legend" aria-hidden="true">
        <span>−1</span>
        <span className="scale" style={{ background: "linear-gradient(90deg, rgba(var(--neg), .6), #fff, rgba(var(--pos), .6))" }} />
        <span>+1</span>
      </div>
    </div>
  );
}
