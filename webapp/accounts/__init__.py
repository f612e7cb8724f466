"""Users, teams, memberships and roles, invitations, personal API tokens."""
