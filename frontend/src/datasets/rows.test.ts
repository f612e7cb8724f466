import { describe, expect, it } from "vitest";
import { checkRows, fromApiRows, labelCounts, parseDelimited, parsePasted, serverRowErrors, toApiRows } from "./rows";

describe("parseDelimited", () => {
  it("reads CSV with quoted fields, doubled quotes and newlines inside quotes", () => {
    expect(parseDelimited('a,"b, c"\n"say ""hi""",d\r\n"two\nlines",e\n\n')).toEqual([
      ["a", "b, c"],
      ['say "hi"', "d"],
      ["two\nlines", "e"],
    ]);
  });

  it("reads tabs when the text has any (a spreadsheet's copy), commas then stay in the fields", () => {
    expect(parseDelimited("hello, world\tyes\nbye\tno")).toEqual([
      ["hello, world", "yes"],
      ["bye", "no"],
    ]);
  });
});

describe("parsePasted", () => {
  it("skips a header naming the columns and trims labels", () => {
    expect(parsePasted("text\tlabel\nthe cat sat\t yes \nthe dog\tno\n", "labelled")).toEqual({
      rows: [
        ["the cat sat", "yes"],
        ["the dog", "no"],
      ],
      header: true,
      problems: [],
    });
  });

  it("takes a labelled row's last field as its label (unquoted commas stay in the text)", () => {
    expect(parsePasted("a, b, c,yes\nonly text", "labelled").rows).toEqual([
      ["a, b, c", "yes"],
      ["only text", ""],
    ]);
  });

  it("reports pairs with too many fields and leaves them out", () => {
    const pasted = parsePasted("positive,negative\nlove,hate\nx,y,z", "contrastive");
    expect(pasted.rows).toEqual([["love", "hate"]]);
    expect(pasted.problems).toEqual(["Line 3: 3 fields; a pair has 2 (quote a field that holds a comma)."]);
  });
});

describe("checking rows", () => {
  it("marks empty and over-long cells at their rows", () => {
    const checked = checkRows(
      [
        ["fine", "yes"],
        ["", "no"],
        ["text", "x".repeat(101)],
      ],
      "labelled",
    );
    expect(checked.rows).toEqual({ 1: "The text is empty.", 2: "The label is 101 characters (at most 100)." });
    expect(checked.general).toEqual([]);
    expect(checked.notes).toEqual(["Probes are trained on two labels; these rows have 3."]);
    expect(checkRows([], "contrastive").general).toEqual(["Add at least one row."]);
  });

  it("maps the server's line numbers back to rows", () => {
    expect(serverRowErrors(["'rows.jsonl': line 3: 'label' is empty", "the dataset has more than 10000 rows, the limit"])).toEqual({
      rows: { 2: "'label' is empty" },
      general: ["the dataset has more than 10000 rows, the limit"],
    });
  });

  it("converts to and from the API's rows, and counts labels", () => {
    const api = [{ positive: "a", negative: "b" }];
    expect(fromApiRows(api, "contrastive")).toEqual([["a", "b"]]);
    expect(toApiRows([["a", "b"]], "contrastive")).toEqual(api);
    expect(labelCounts([["a", "no"], ["b", "yes"], ["c", "yes"], ["d", " "]])).toEqual([["yes", 2], ["no", 1]]);
  });
});
