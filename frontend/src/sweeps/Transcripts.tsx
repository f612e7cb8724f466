// A sweep cell's transcripts: each prompt with the steered and the baseline text, the KL of every
// generated token (a chart), and the probes' mean scores beside the baseline's.
import { useMemo } from "react";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { Empty, Loading, Notice, Panel } from "../ui/components";
import { LineChart } from "../ui/LineChart";
import { formatNumber } from "./sweep";

type Transcript = Schemas["TranscriptOut"];

export function Transcripts({
  jobId,
  cell,
  layer,
  scale,
  probes,
}: {
  jobId: number;
  cell: number;
  layer: number;
  scale: number;
  probes: string[];
}) {
  const transcripts = useResource(
    () => unwrap(api.GET("/api/jobs/{job_id}/cells/{cell}/transcripts", { params: { path: { job_id: jobId, cell } } })),
    `${jobId}:${cell}`,
  );
  return (
    <Panel title={`Transcripts: layer ${layer}, scale ${scale}`}>
      <Notice>{transcripts.error}</Notice>
      {transcripts.loading && !transcripts.data ? <Loading what="the transcripts" /> : null}
      {transcripts.data?.length === 0 ? <Empty>No transcripts.</Empty> : null}
      {transcripts.data?.map((t, i) => (
        <TranscriptItem key={i} index={i} transcript={t} probes={probes} />
      ))}
    </Panel>
  );
}

function TranscriptItem({ index, transcript: t, probes }: { index: number; transcript: Transcript; probes: string[] }) {
  const x = useMemo(() => t.kl.map((_, i) => i), [t.kl]);
  const series = useMemo(() => [{ label: "KL per token", values: t.kl }], [t.kl]);
  const meanKl = t.kl.length ? t.kl.reduce((a, b) => a + b, 0) / t.kl.length : null;
  const top = Math.max(0, ...t.kl);
  const range = useMemo((): [number, number] => [0, top > 0 ? top * 1.1 : 1], [top]);
  return (
    <article className="transcript" data-testid="transcript">
      <h3>Prompt {index + 1}</h3>
      <p className="prompt">{t.prompt}</p>
      <div className="texts">
        <div>
          <h4>Steered</h4>
          <pre>{t.text || "(no tokens)"}</pre>
        </div>
        <div>
          <h4>Baseline (unsteered)</h4>
          <pre>{t.baseline || "(no tokens)"}</pre>
        </div>
      </div>
      <p className="meta">
        {t.kl.length} generated tokens · mean KL {formatNumber(meanKl)}
        {probes.map((probe, p) => ` · ${probe}: ${formatNumber(t.probe_means[p])} (baseline ${formatNumber(t.baseline_probe_means[p])})`).join("")}
      </p>
      {t.kl.length > 0 ? <LineChart x={x} series={series} label={`KL per generated token, prompt ${index + 1}`} xLabel="token" yLabel="KL (nats)" height={140} yRange={range} integerX /> : null}
    </article>
  );
}
