"""The aggregation's per-day state: per-file numbers kept in parts whose size does not grow with the day.

`result/DATE/summary.json` is the head and the commit point. It holds the answer (the highest-score
row, total rows, file counts), the input digest and one line per part: its hash prefix, its object,
its files, rows, best row and digest. The per-file numbers (`inputs`, `files`, `unreadable`, in the
same shape as a whole-day summary) live in the parts:
- a day of at most PART_LIMIT files has one part, the root (prefix ""), kept inline in the head:
  summary.json then looks as it always did, with every file's row;
- a bigger day's files are split by the hex digits of sha256(key): a part that outgrows PART_LIMIT
  becomes 16 parts one digit longer (a 50,000-file day: 256 parts of ~200 files). Each part is an
  object `result/DATE/parts/<prefix>-<id>.json` written once under a fresh name; the head names
  the ones it was computed from, so a head and its parts always agree, and the parts it replaced
  are deleted after it is written.
So folding one file into the result reads and writes the head and one part, both bounded in size
whatever the day holds (the head grows by one line per PART_LIMIT/16 files or so).

The input digest is order-independent and additive: the sum modulo 2**256 of sha256(key \\0 etag)
over the input set. Adding or removing one file updates it without the other pairs, and the same
set gives the same digest however it is split into parts.
"""
from __future__ import annotations

import hashlib
import json
import uuid

PART_LIMIT = 1000
FANOUT = "0123456789abcdef"
_MOD = 1 << 256


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def pair_value(key: str, etag: str) -> int:
    h = hashlib.sha256(key.encode("utf-8") + b"\0" + etag.encode("ascii", "replace"))
    return int.from_bytes(h.digest(), "big")


def digest_of(values) -> str:
    return format(sum(values) % _MOD, "064x")


def input_digest(pairs) -> str:
    """The digest of an input set, given as (key, etag) pairs or dicts with both."""
    return digest_of(pair_value(*((p["key"], p["etag"]) if isinstance(p, dict) else p))
                     for p in pairs)


def better(candidate: dict | None, best: dict | None) -> bool:
    """Whether `candidate` (a best row with its `file`) beats `best`: a higher score, or the same
    score in a file earlier in key order (ties go to the first file, as in one sorted pass)."""
    if candidate is None:
        return False
    if best is None:
        return True
    return candidate["score"] > best["score"] or \
        (candidate["score"] == best["score"] and candidate["file"] < best["file"])


class Part:
    """The files of one hash prefix: entries by key, each {key, etag, size, last_modified} plus
    either {rows, best} or {error}."""

    def __init__(self, prefix: str, entries: dict[str, dict] | None = None,
                 object_key: str | None = None, line: dict | None = None):
        self.prefix = prefix
        self.entries = entries          # None until loaded
        self.object_key = object_key    # where it is stored (None: inline, or not written yet)
        self.line = line                # its line in the head as read, until changed
        self.changed = False

    def digest(self) -> str:
        if self.line is not None and not self.changed:
            return self.line["digest"]
        return input_digest(self.entries.values())

    def summary_line(self) -> dict:
        if self.line is not None and not self.changed:
            return self.line
        best, rows, readable, unreadable = None, 0, 0, 0
        for e in self.entries.values():
            if "error" in e:
                unreadable += 1
                continue
            readable += 1
            rows += e["rows"]
            if e["best"] is not None:
                candidate = {**e["best"], "file": e["key"]}
                if better(candidate, best):
                    best = candidate
        self.line = {"prefix": self.prefix, "object": self.object_key, "files": readable,
                     "unreadable": unreadable, "rows": rows, "best": best,
                     "digest": input_digest(self.entries.values())}
        return self.line

    def arrays(self) -> dict:
        """The per-file rows in a whole-day summary's shape, sorted by key."""
        ordered = [self.entries[k] for k in sorted(self.entries)]
        return {
            "inputs": [{"key": e["key"], "etag": e["etag"], "size": e["size"],
                        "last_modified": e["last_modified"]} for e in ordered],
            "files": [{"key": e["key"], "etag": e["etag"], "rows": e["rows"], "best": e["best"]}
                      for e in ordered if "error" not in e],
            "unreadable": [{"key": e["key"], "error": e["error"]} for e in ordered if "error" in e],
        }


def entries_from_arrays(doc: dict) -> dict[str, dict]:
    """The entries of a part (or an inline head) from its `inputs`, `files` and `unreadable`."""
    entries = {i["key"]: {"key": i["key"], "etag": i["etag"], "size": i.get("size", 0),
                          "last_modified": i.get("last_modified", "")}
               for i in doc.get("inputs", [])}
    for f in doc.get("files", []):
        e = entries.get(f["key"])
        if e is not None and e["etag"] == f["etag"] and {"rows", "best"} <= set(f):
            e.update(rows=f["rows"], best=f["best"])
    for u in doc.get("unreadable", []):
        e = entries.get(u["key"])
        if e is not None and "rows" not in e:
            e["error"] = u["error"]
    # an input without numbers (a head written by hand, a truncated part) is read again
    return {k: e for k, e in entries.items() if "rows" in e or "error" in e}


class DayState:
    """The parts of one day, as read from a head (or empty), and the changes made to them."""

    def __init__(self, parts: list[Part], head: dict | None = None):
        self.parts = {p.prefix: p for p in parts}
        self.head = head
        self.replaced: list[str] = []   # part objects the new head no longer names

    @classmethod
    def empty(cls) -> DayState:
        return cls([Part("", {})])

    @classmethod
    def from_head(cls, head: dict) -> DayState:
        lines = head.get("parts")
        if not lines:     # one inline part (also every summary written before parts existed)
            return cls([Part("", entries_from_arrays(head))], head)
        return cls([Part(line["prefix"], None, line.get("object"), line) for line in lines], head)

    def part_for(self, key: str) -> Part:
        h = key_hash(key)
        for n in range(len(h) + 1):
            part = self.parts.get(h[:n])
            if part is not None:
                return part
        raise KeyError(key)     # the prefixes always cover every hash; a broken head otherwise

    def unloaded(self) -> list[Part]:
        return [p for p in self.parts.values() if p.entries is None]

    def all_entries(self) -> dict[str, dict]:
        found = {}
        for p in self.parts.values():
            found.update(p.entries)
        return found

    def put(self, entry: dict) -> None:
        part = self.part_for(entry["key"])
        part.entries[entry["key"]] = entry
        self._changed(part)

    def remove(self, key: str) -> None:
        part = self.part_for(key)
        if part.entries.pop(key, None) is not None:
            self._changed(part)

    def _changed(self, part: Part) -> None:
        if not part.changed:
            part.changed = True
            if part.object_key:
                self.replaced.append(part.object_key)
            part.object_key = None
        if len(part.entries) > PART_LIMIT and len(part.prefix) < 64:
            self._split(part)

    def _split(self, part: Part) -> None:
        del self.parts[part.prefix]
        children = {d: Part(part.prefix + d, {}) for d in FANOUT}
        for key, e in part.entries.items():
            children[key_hash(key)[len(part.prefix)]].entries[key] = e
        for child in children.values():
            self.parts[child.prefix] = child
            self._changed(child)

    def set_entries(self, part: Part, entries: dict[str, dict]) -> None:
        """The part holds exactly these entries now (a part recomputed from a listing)."""
        if part.entries != entries:
            part.entries = dict(entries)
            self._changed(part)

    def file_count(self) -> int:
        return sum(len(p.entries) if p.changed or p.line is None else
                   p.line["files"] + p.line["unreadable"] for p in self.parts.values())

    def collapse(self) -> None:
        """Back to one inline part once the day fits in one (files deleted): every part loaded."""
        entries = self.all_entries()
        for p in self.parts.values():
            if p.object_key and p.object_key not in self.replaced:
                self.replaced.append(p.object_key)
        root = Part("", entries)
        root.changed = True
        self.parts = {"": root}

    # --- the new head ---------------------------------------------------------------------

    def inline(self) -> bool:
        return list(self.parts) == [""]

    def parts_to_write(self, part_key) -> list[tuple[str, bytes]]:
        """(object key, body) of each changed part, when the head does not hold it inline;
        `part_key(prefix, id)` names it."""
        if self.inline():
            return []
        out = []
        for p in sorted(self.parts.values(), key=lambda p: p.prefix):
            if p.changed and p.object_key is None:
                p.object_key = part_key(p.prefix or "root", uuid.uuid4().hex[:16])
                body = {"prefix": p.prefix, **p.arrays()}
                out.append((p.object_key, json.dumps(body, ensure_ascii=False).encode("utf-8")))
        return out

    def head_fields(self) -> dict:
        lines = [self.parts[k].summary_line() for k in sorted(self.parts)]
        best = None
        for line in lines:
            if better(line["best"], best):
                best = line["best"]
        fields = {
            "input_digest": digest_of(int(line["digest"], 16) for line in lines),
            "file_count": sum(line["files"] + line["unreadable"] for line in lines),
            "total_rows": sum(line["rows"] for line in lines),
            "max": best,
        }
        if self.inline():
            fields.update(self.parts[""].arrays(), parts=[])
        else:
            fields["parts"] = [{**line, "object": self.parts[line["prefix"]].object_key}
                               for line in lines]
        return fields

