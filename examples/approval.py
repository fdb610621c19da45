"""A flow that pauses for a person, then resumes from saved state.

The first half would run in one process (a web request, say) and store the
state anywhere; the second half can run in another process, later.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import flowdsl as fd


@fd.node
def draft(topic: str) -> str:
    return f"A short post about {topic}."


approval = fd.wait_for("approval", after=[draft])


@fd.node
def publish(draft: str, approval: Mapping[str, Any]) -> fd.Action[str]:
    if approval["ok"]:
        return fd.Action("published", f"{draft} (approved by {approval['by']})")
    return fd.Action("rejected", draft)


@fd.node(on=(publish, "published"))
def announce(publish: str) -> str:
    return f"Announced: {publish}"


def build() -> fd.Flow:
    return fd.Flow("approval", [draft, approval, publish, announce])


def main() -> None:
    paused = build().run({"topic": "owls"})
    print("status:", paused.status, "waiting for:", paused.waiting_for)
    saved = json.dumps(paused.state)

    # ...later, perhaps in another process, with a freshly built flow:
    done = build().resume(
        json.loads(saved), events={"approval": {"ok": True, "by": "Ada"}}
    )
    print("status:", done.status)
    print(done["announce"])


if __name__ == "__main__":
    main()
