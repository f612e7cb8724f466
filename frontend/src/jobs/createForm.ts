// The state every create form on a model has (the job forms, the new board and the new sweep):
// the deployment, the name, who can see the result, and the submit's action with its field errors.
import { useState } from "react";
import type { Deployment } from "../library/shared";
import type { Sharing } from "../library/sharing";
import { useSharing } from "../library/sharing";
import type { FieldAction, FieldErrors } from "../ui/formErrors";
import { useFieldAction } from "../ui/formErrors";

export interface CreateForm {
  /** The picked deployment's name, or the first one's until one is picked ("" when none). */
  chosen: string;
  setDeployment: (name: string) => void;
  name: string;
  setName: (name: string) => void;
  sharing: Sharing;
  action: FieldAction;
  /** The client-side check before a submit: adds the name's problem to the form's own `problems`;
   * when there are any, shows them at their fields and returns true (the submit stops there). */
  rejects: (problems: FieldErrors) => boolean;
}

export function useCreateForm(deployments: Deployment[]): CreateForm {
  const [deployment, setDeployment] = useState("");
  const chosen = deployment || deployments[0]?.name || "";
  const [name, setName] = useState("");
  const sharing = useSharing();
  const action = useFieldAction();
  const rejects = (problems: FieldErrors) => {
    const all = name.trim() ? problems : { ...problems, name: ["Enter a name."] };
    if (Object.keys(all).length === 0) return false;
    action.invalid(all);
    return true;
  };
  return { chosen, setDeployment, name, setName, sharing, action, rejects };
}
