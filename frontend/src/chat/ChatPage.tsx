// The chat page: conversations on the left, the streaming transcript in the middle, the recipe's
// live controls and the probe picker on the right.
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { Badge, Button, Empty, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { Knobs, initialKnobs, overridesOf } from "./Knobs";
import type { Knob } from "./Knobs";
import { NewConversation } from "./NewConversation";
import { RunCard } from "./RunCard";
import { describeIntervention, indicesOf } from "./heat";
import type { Intervention, RunSummary } from "./protocol";
import { ACTIVE, typedStop } from "./protocol";
import { chatReducer, initialChat, isActive } from "./stream";
import { useConversationSocket } from "./useConversationSocket";

const RESTREAM_FINISHED = 10; // finished runs re-streamed on load, for their per-token reads

export function ChatPage() {
  const { id } = useParams();
  const conversationId = id ? Number(id) : null;
  const list = useResource(() => unwrap(api.GET("/api/conversations", { params: { query: { limit: 100 } } })), "list");

  return (
    <div className="chat-layout">
      <nav aria-label="Conversations">
        <Panel title="Conversations" actions={<Link to="/chat" className="btn btn-small btn-primary">New</Link>}>
          {list.loading && !list.data ? <Loading what="conversations" /> : null}
          <Notice>{list.error}</Notice>
          {list.data && list.data.items.length === 0 ? <Empty>No conversations yet.</Empty> : null}
          <ul className="list">
            {list.data?.items.map((c) => (
              <li key={c.id}>
                <Link to={`/chat/${c.id}`} aria-current={c.id === conversationId ? "page" : undefined}>
                  {c.title || `Conversation ${c.id}`}
                  <div className="meta">{c.deployment}{c.recipe_id ? ` · recipe ${c.recipe_id} v${c.recipe_version ?? "?"}` : " · plain"}</div>
                </Link>
              </li>
            ))}
          </ul>
        </Panel>
      </nav>
      {conversationId === null ? (
        <NewConversation onCreated={list.reload} />
      ) : (
        <ConversationLoader key={conversationId} id={conversationId} onTurn={list.reload} />
      )}
    </div>
  );
}

function ConversationLoader({ id, onTurn }: { id: number; onTurn: () => void }) {
  const detail = useResource(async () => {
    const conversation = await unwrap(
      api.GET("/api/conversations/{conversation_id}", { params: { path: { conversation_id: id } } }),
    );
    let interventions: Intervention[] = [];
    let recipeName = "";
    if (conversation.recipe_id !== null && conversation.recipe_version !== null) {
      const [recipe, version] = await Promise.all([
        unwrap(api.GET("/api/recipes/{recipe_id}", { params: { path: { recipe_id: conversation.recipe_id } } })),
        unwrap(
          api.GET("/api/recipes/{recipe_id}/versions/{number}", {
            params: { path: { recipe_id: conversation.recipe_id, number: conversation.recipe_version } },
          }),
        ),
      ]);
      interventions = ((version.spec as { interventions?: Intervention[] }).interventions ?? []);
      recipeName = `${recipe.name} v${version.number}`;
    }
    return { conversation, interventions, recipeName };
  }, String(id));

  if (detail.error) return <Notice>{detail.error}</Notice>;
  if (!detail.data) return <Loading what="the conversation" />;
  return <Conversation {...detail.data} onTurn={onTurn} />;
}

function Conversation({
  conversation,
  interventions,
  recipeName,
  onTurn,
}: {
  conversation: Schemas["ConversationDetailOut"];
  interventions: Intervention[];
  recipeName: string;
  onTurn: () => void; // the first message names the conversation: the list shows it
}) {
  const history = useMemo(
    () => conversation.runs.map((run) => ({ prompt: run.prompt, run: run as unknown as RunSummary })),
    [conversation.runs],
  );
  const [state, dispatch] = useReducer(chatReducer, initialChat, (init) =>
    chatReducer(init, { kind: "history", turns: history }),
  );
  const restreamed = useRef(false);
  const resumeOnOpen = useCallback(() => {
    if (restreamed.current) return [];
    restreamed.current = true;
    return history
      .filter(({ run }) => !ACTIVE.has(run.status) && run.interventions.length > 0)
      .slice(-RESTREAM_FINISHED)
      .map(({ run }) => run.id);
  }, [history]);
  const { connection, closedReason, send } = useConversationSocket(conversation.id, state, dispatch, resumeOnOpen);

  const [knobs, setKnobs] = useState<(Knob | null)[]>(() => initialKnobs(interventions));
  const probes = indicesOf(interventions, "probe");
  const [probe, setProbe] = useState<number | null>(probes[0] ?? null);
  const [message, setMessage] = useState("");
  const [maxTokens, setMaxTokens] = useState(48);
  const [temperature, setTemperature] = useState(0.7);
  const [stopAt, setStopAt] = useState("");
  const [compare, setCompare] = useState(false);
  const refs = useRef(0);
  const navigate = useNavigate();

  const activeRuns = Object.values(state.runs).filter(isActive);
  // The first turn names an untitled conversation (the server does, before the turn's runs
  // reach this page): the list then shows the new name.
  const named = !conversation.title && state.turns.length > 0;
  useEffect(() => {
    if (named) onTurn();
  }, [named, onTurn]);

  const onKnob = (index: number, change: Partial<Knob>, live: boolean) => {
    setKnobs((current) => current.map((k, i) => (i === index && k ? { ...k, ...change } : k)));
    if (!live) return;
    for (const run of activeRuns) {
      if (run.summary.interventions.length) send({ type: "adjust", run: run.id, intervention: index, ...change });
    }
  };

  const submit = () => {
    if (!message.trim()) return;
    const ref = `g${++refs.current}`;
    dispatch({ kind: "pending", ref, pending: { prompt: message } });
    const overrides = overridesOf(interventions, knobs);
    const sent = send({
      type: "generate",
      ref,
      content: message,
      sampling: { max_new_tokens: maxTokens, temperature, ...(stopAt ? { stop: [typedStop(stopAt)] } : {}) },
      compare,
      ...(overrides.length ? { overrides } : {}),
    });
    if (sent) setMessage("");
  };

  const replay = (run: number) => {
    const ref = `r${++refs.current}`;
    dispatch({ kind: "pending", ref, pending: { replayOf: run } });
    send({ type: "replay", run, ref });
  };

  const connectionLabel = { connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", closed: closedReason }[connection];

  return (
    <>
      <div>
        <PageHeader title={conversation.title || state.turns[0]?.prompt.slice(0, 80) || `Conversation ${conversation.id}`}>
          <Badge tone={connection === "connected" ? "good" : "warn"}>
            <span role="status" className="connection" data-testid="connection">{connectionLabel}</span>
          </Badge>
        </PageHeader>
        <p className="meta">
          Model <strong>{conversation.deployment}</strong> · Recipe{" "}
          {conversation.recipe_id ? (
            <Link to={`/recipes/${conversation.recipe_id}`}>{recipeName}</Link>
          ) : (
            "none (plain chat)"
          )}
        </p>
        <section className="panel" aria-label="Transcript">
          {state.turns.length === 0 ? <Empty>Say something to start.</Empty> : null}
          <div aria-live="polite">
            {state.turns.map((turn) => (
              <div className="turn" key={turn.key} data-testid="turn">
                <p className="prompt">{turn.prompt}</p>
                <div className="columns">
                  {turn.runIds.map((runId) => {
                    const run = state.runs[runId];
                    return run ? (
                      <RunCard
                        key={runId}
                        run={run}
                        probe={probe}
                        onStop={(r) => send({ type: "stop", run: r })}
                        onReplay={replay}
                      />
                    ) : null;
                  })}
                </div>
              </div>
            ))}
          </div>
        </section>
        {state.errors.map((e, i) => (
          <Notice key={i}>{`${e.code}: ${e.message}`}</Notice>
        ))}
        <form
          className="panel composer"
          aria-label="Send a message"
          onSubmit={(event) => {
            event.preventDefault();
            submit();
          }}
        >
          <Field label="Message">
            {(fieldId) => (
              <textarea
                id={fieldId}
                rows={3}
                value={message}
                onChange={(event) => { setMessage(event.target.value); }}
                onKeyDown={(event) => {
                  if (event.key === "Enter" && !event.shiftKey) {
                    event.preventDefault();
                    submit();
                  }
                }}
              />
            )}
          </Field>
          <div className="form-row">
            <Field label="Max new tokens" inline>
              {(fieldId) => (
                <input id={fieldId} type="number" min={1} max={4096} value={maxTokens} style={{ width: "6em" }}
                  onChange={(event) => { setMaxTokens(Number(event.target.value) || 1); }} />
              )}
            </Field>
            <Field label="Temperature" inline>
              {(fieldId) => (
                <input id={fieldId} type="number" min={0} max={5} step={0.1} value={temperature} style={{ width: "5em" }}
                  onChange={(event) => { setTemperature(Number(event.target.value)); }} />
              )}
            </Field>
            <Field label="Stop at" hint={<>\n is a newline</>} inline>
              {(fieldId, describedBy) => (
                <input id={fieldId} type="text" maxLength={64} value={stopAt} style={{ width: "6em" }} aria-describedby={describedBy}
                  onChange={(event) => { setStopAt(event.target.value); }} />
              )}
            </Field>
            <Field label="Compare with the unsteered model" inline>
              {(fieldId) => (
                <input id={fieldId} type="checkbox" checked={compare} disabled={!interventions.length}
                  onChange={(event) => { setCompare(event.target.checked); }} />
              )}
            </Field>
            <span style={{ marginLeft: "auto" }} />
            <Button
              variant="danger"
              disabled={!activeRuns.length}
              onClick={() => { for (const run of activeRuns) send({ type: "stop", run: run.id }); }}
            >
              Stop all
            </Button>
            <Button type="submit" variant="primary" disabled={connection !== "connected"}>
              Send
            </Button>
          </div>
        </form>
      </div>
      <aside aria-label="Controls">
        <Panel title="Interventions">
          <p className="meta">Changes apply live to answers in progress (from the next token) and to later turns.</p>
          <Knobs interventions={interventions} knobs={knobs} onChange={onKnob} />
          {interventions.length ? (
            <Button small variant="ghost" onClick={() => { setKnobs(initialKnobs(interventions)); }}>
              Reset to the recipe
            </Button>
          ) : null}
        </Panel>
        <Panel title="Heatmap">
          {probes.length ? (
            <>
              <Field label="Colour tokens by">
                {(fieldId) => (
                  <select id={fieldId} value={probe ?? ""} onChange={(event) => { setProbe(event.target.value === "" ? null : Number(event.target.value)); }}>
                    <option value="">No colouring</option>
                    {probes.map((index) => {
                      const item = interventions[index];
                      return item ? <option key={index} value={index}>{describeIntervention(item, index)}</option> : null;
                    })}
                  </select>
                )}
              </Field>
              <div className="legend" aria-hidden="true">below 0 <span className="scale" /> above 0</div>
              <p className="meta">Hover or focus a token for its score and the logit lens.</p>
            </>
          ) : (
            <Empty>The recipe has no probe.</Empty>
          )}
        </Panel>
        <Button small variant="ghost" onClick={() => { void navigate("/recipes"); }}>
          Edit recipes →
        </Button>
      </aside>
    </>
  );
}
