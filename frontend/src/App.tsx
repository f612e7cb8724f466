// The application shell: the top bar (navigation, the user, log out) and the routes. A share
// link's page is for visitors who may not be logged in: it gets a bare shell (no /api/me call).
import { NavLink, Navigate, Route, Routes, useLocation } from "react-router";
import { api, csrfToken, unwrap } from "./api/client";
import { useResource } from "./api/useResource";
import { AccountPage } from "./accounts/AccountPage";
import { TeamsPage } from "./accounts/TeamsPage";
import { BoardPage } from "./boards/BoardPage";
import { BoardsPage } from "./boards/BoardsPage";
import { ChatPage } from "./chat/ChatPage";
import { DatasetEditorPage } from "./datasets/DatasetEditorPage";
import { JobPage } from "./jobs/JobPage";
import { JobsPage } from "./jobs/JobsPage";
import { LibraryPage } from "./library/LibraryPage";
import { RecipeEditorPage } from "./recipes/RecipeEditorPage";
import { RecipesPage } from "./recipes/RecipesPage";
import { SharedPage } from "./shared/SharedPage";
import { Button } from "./ui/components";

const NAV = [
  ["/chat", "Chat"],
  ["/recipes", "Recipes"],
  ["/library", "Library"],
  ["/jobs", "Jobs"],
  ["/boards", "Boards"],
  ["/teams", "Teams"],
  ["/account", "Account"],
] as const;

export function App() {
  const { pathname } = useLocation();
  return pathname.startsWith("/shared/") ? <SharedShell /> : <LoggedInApp />;
}

function SharedShell() {
  return (
    <>
      <a className="skip-link" href="#main">Skip to content</a>
      <header className="topbar">
        <span className="brand">Steerlab</span>
      </header>
      <main id="main">
        <Routes>
          <Route path="/shared/:token" element={<SharedPage />} />
          <Route path="*" element={<p>Nothing here.</p>} />
        </Routes>
      </main>
    </>
  );
}

function LoggedInApp() {
  const me = useResource(() => unwrap(api.GET("/api/me")), "me");
  return (
    <>
      <a className="skip-link" href="#main">Skip to content</a>
      <header className="topbar">
        <a className="brand" href="/app/chat">Steerlab</a>
        <nav aria-label="Main">
          <ul>
            {NAV.map(([to, label]) => (
              <li key={to}>
                <NavLink to={to}>{label}</NavLink>
              </li>
            ))}
          </ul>
        </nav>
        <div className="user">
          {me.data ? <span data-testid="username">{me.data.username}</span> : null}
          <form method="post" action="/accounts/logout/">
            <input type="hidden" name="csrfmiddlewaretoken" value={csrfToken()} />
            <Button type="submit" small>Log out</Button>
          </form>
        </div>
      </header>
      <main id="main">
        <Routes>
          <Route path="/" element={<Navigate to="/chat" replace />} />
          <Route path="/chat" element={<ChatPage />} />
          <Route path="/chat/:id" element={<ChatPage />} />
          <Route path="/recipes" element={<RecipesPage />} />
          <Route path="/recipes/new" element={<RecipeEditorPage />} />
          <Route path="/recipes/:id" element={<RecipeEditorPage />} />
          <Route path="/library" element={<LibraryPage />} />
          <Route path="/datasets/new" element={<DatasetEditorPage />} />
          <Route path="/datasets/:id" element={<DatasetEditorPage />} />
          <Route path="/jobs" element={<JobsPage />} />
          <Route path="/jobs/:id" element={<JobPage />} />
          <Route path="/boards" element={<BoardsPage />} />
          <Route path="/boards/:id" element={<BoardPage />} />
          <Route path="/teams" element={<TeamsPage />} />
          <Route path="/account" element={<AccountPage />} />
          <Route path="*" element={<p>Nothing here. <a href="/app/chat">Back to the chat</a>.</p>} />
        </Routes>
      </main>
    </>
  );
}
