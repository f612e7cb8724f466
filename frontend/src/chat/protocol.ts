// The conversation websocket's messages (/ws/conversations/<id>/; webapp/playground/consumers.py).
// The HTTP API's types are generated; these frames are not part of OpenAPI, so they are declared
// here, next to the one reducer that reads them.
import type { Recipe } from "../generated/recipe";

export type Intervention = Recipe["interventions"][number];

export interface RunSummary {
  id: number;
  kind: string; // chat | baseline | replay
  status: string;
  attempt: number;
  compare_group: string | null;
  recipe_version: number | null;
  interventions: Intervention[];
  sampling: Record<string, unknown>;
  overrides: Adjustment[];
  adjustments: LoggedAdjustment[];
  text: string;
  finish_reason: string;
  replay_of: number | null;
}

export interface Adjustment {
  index: number;
  scale?: number;
  enabled?: boolean;
}

export interface LoggedAdjustment extends Adjustment {
  step: number;
}

export interface LensRead {
  ids: number[];
  tokens: string[];
  probs: number[];
}

interface RunFrameBase {
  run: number;
  attempt: number;
  seq: number;
}

export type RunFrame =
  | (RunFrameBase & { type: "started"; run_kind: string; prompt_tokens: number })
  | (RunFrameBase & { type: "token"; index: number; token_id: number; text: string; logprob: number })
  | (RunFrameBase & {
      type: "reads";
      position: number;
      index: number;
      probes: Record<string, number>;
      lens: Record<string, LensRead>;
    })
  | (RunFrameBase & { type: "adjusted" } & LoggedAdjustment)
  // `tail`: text the token frames held back until the end (the rest of a character split over
  // tokens, the start of a stop string that never came); absent in runs stored before it existed.
  | (RunFrameBase & { type: "finished"; status: string; reason: string; text: string; tail?: string; error: string });

export type ServerFrame =
  | RunFrame
  | { type: "runs"; ref?: string; runs: RunSummary[] }
  | { type: "queued"; run: number; position: number }
  | { type: "resumed"; ref?: string; run: RunSummary }
  | { type: "cancelled"; run: number; status?: string }
  | { type: "gap"; run: number; before: [number, number] }
  | { type: "error"; ref?: string; code: string; message: string }
  | { type: "ack"; ref?: string; run: number; action: string }
  | { type: "pong" | "status" | "recipe"; ref?: string };

export type ClientMessage =
  | {
      type: "generate";
      ref: string;
      content: string;
      sampling: { max_new_tokens: number; temperature: number; seed?: number; stop?: string[] };
      compare: boolean;
      overrides?: Adjustment[];
    }
  | ({ type: "adjust"; run: number; intervention: number } & Omit<Adjustment, "index">)
  | { type: "stop"; run: number }
  | { type: "replay"; run: number; ref: string }
  | { type: "resume"; run: number; attempt: number; seq: number }
  | { type: "ping"; ref?: string };

export const WRITE_OPS = new Set(["steer", "ablate", "project_out", "clamp", "patch"]);
export const ACTIVE = new Set(["queued", "running"]);

/** A stop sequence as typed in one line: `\n` is a newline, `\t` a tab and `\\` a backslash. */
export function typedStop(typed: string): string {
  return typed.replace(/\\([nt\\])/g, (_, c: string) => (c === "n" ? "\n" : c === "t" ? "\t" : "\\"));
}
