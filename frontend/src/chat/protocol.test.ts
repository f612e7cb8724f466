import { describe, expect, it } from "vitest";

import { typedStop } from "./protocol";

describe("typedStop", () => {
  it("reads \\n, \\t and \\\\ as a newline, a tab and a backslash", () => {
    expect(typedStop("\\n\\n")).toBe("\n\n");
    expect(typedStop("a\\tb")).toBe("a\tb");
    expect(typedStop("\\\\n")).toBe("\\n"); // an escaped backslash, then a plain n
  });

  it("leaves everything else as typed", () => {
    expect(typedStop("User:")).toBe("User:");
    expect(typedStop("\\x")).toBe("\\x");
  });
});
