// Who can see what a form creates: the visibility and team selects, their state, and the part of
// a request body they make (uploads, datasets, jobs, boards and sweeps all send it).
import { useState } from "react";
import { Field } from "../ui/components";
import type { Team, Visibility } from "./shared";
import { isVisibility } from "./shared";

/** The sharing fields' state; `team` is the chosen team's id as the select has it, "" for none. */
export interface Sharing {
  visibility: Visibility;
  setVisibility: (value: Visibility) => void;
  team: string;
  setTeam: (value: string) => void;
}

/** Private and no team until changed. */
export function useSharing(): Sharing {
  const [visibility, setVisibility] = useState<Visibility>("private");
  const [team, setTeam] = useState("");
  return { visibility, setVisibility, team, setTeam };
}

/** The request body's `visibility` and `team` (null for no team). */
export function sharingBody({ visibility, team }: Pick<Sharing, "visibility" | "team">): { visibility: Visibility; team: number | null } {
  return { visibility, team: team === "" ? null : Number(team) };
}

/** Visibility and team selects. */
export function SharingFields({ sharing, teams }: { sharing: Sharing; teams: Team[] }) {
  return (
    <div className="form-row">
      <Field label="Visibility">
        {(id) => (
          <select
            id={id}
            value={sharing.visibility}
            onChange={(e) => {
              if (isVisibility(e.target.value)) sharing.setVisibility(e.target.value);
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
          <select id={id} aria-describedby={describedBy} value={sharing.team} onChange={(e) => { sharing.setTeam(e.target.value); }}>
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
