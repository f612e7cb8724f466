// The library: steering vectors, probes and datasets, one section at a time (?section=...).
import { useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import { Button, Notice, PageHeader } from "../ui/components";
import { DatasetsTab } from "./DatasetsTab";
import { ProbesTab } from "./ProbesTab";
import { VectorsTab } from "./VectorsTab";

const SECTIONS = [
  ["vectors", "Vectors"],
  ["probes", "Probes"],
  ["datasets", "Datasets"],
] as const;

type Section = (typeof SECTIONS)[number][0];

const isSection = (value: string | null): value is Section => SECTIONS.some(([key]) => key === value);

export function LibraryPage() {
  const [params, setParams] = useSearchParams();
  const raw = params.get("section");
  const section: Section = isSection(raw) ? raw : "vectors";
  // ?item=<id>: the item to select (a link from a job to what it made).
  const item = Number(params.get("item") ?? "") || null;
  const deployments = useResource(
    () => unwrap(api.GET("/api/deployments", { params: { query: { limit: 100 } } })),
    "deployments",
  );
  const teams = useResource(() => unwrap(api.GET("/api/teams", { params: { query: { limit: 100 } } })), "teams");
  const deploymentItems = deployments.data?.items ?? [];
  const teamItems = teams.data?.items ?? [];

  return (
    <div>
      <PageHeader title="Library">
        <div role="group" aria-label="Library section" className="form-row">
          {SECTIONS.map(([key, label]) => (
            <Button
              key={key}
              variant={key === section ? "primary" : "secondary"}
              aria-pressed={key === section}
              onClick={() => {
                setParams({ section: key });
              }}
            >
              {label}
            </Button>
          ))}
        </div>
      </PageHeader>
      <Notice>{deployments.error}</Notice>
      <Notice>{teams.error}</Notice>
      {section === "vectors" ? <VectorsTab key={item} deployments={deploymentItems} teams={teamItems} selected={item} /> : null}
      {section === "probes" ? <ProbesTab key={item} deployments={deploymentItems} teams={teamItems} selected={item} /> : null}
      {section === "datasets" ? <DatasetsTab key={item} teams={teamItems} selected={item} /> : null}
    </div>
  );
}
