// Recipes visible to me (mine, my teams', public ones), searchable by name.
import { useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import { Badge, Empty, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";

export function RecipesPage() {
  const [q, setQ] = useState("");
  const recipes = useResource(
    () => unwrap(api.GET("/api/recipes", { params: { query: { q: q || null, limit: 100 } } })),
    q,
  );
  return (
    <>
      <PageHeader title="Recipes">
        <Link className="btn btn-primary" to="/recipes/new">New recipe</Link>
      </PageHeader>
      <Panel title="All recipes you can see">
        <Field label="Search by name">
          {(id) => <input id={id} type="search" value={q} onChange={(e) => { setQ(e.target.value); }} />}
        </Field>
        <Notice>{recipes.error}</Notice>
        {recipes.loading && !recipes.data ? <Loading what="recipes" /> : null}
        {recipes.data?.items.length === 0 ? <Empty>No recipe matches.</Empty> : null}
        {recipes.data?.items.length ? (
          <table>
            <thead>
              <tr><th scope="col">Name</th><th scope="col">Model</th><th scope="col">Owner</th><th scope="col">Visibility</th><th scope="col">Latest</th><th scope="col">Updated</th></tr>
            </thead>
            <tbody>
              {recipes.data.items.map((r) => (
                <tr key={r.id}>
                  <td><Link to={`/recipes/${r.id}`}>{r.name}</Link><div className="meta">{r.description}</div></td>
                  <td>{r.deployment}</td>
                  <td>{r.owner}</td>
                  <td><Badge tone={r.visibility === "public" ? "info" : "neutral"}>{r.visibility}</Badge></td>
                  <td>v{r.latest_version ?? "–"}</td>
                  <td className="meta">{new Date(r.updated_at).toLocaleString()}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : null}
      </Panel>
    </>
  );
}
