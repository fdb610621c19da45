"""A flow that contains itself directly: importing this module must fail."""

from __future__ import annotations

import flowdsl as fd


@fd.node
def leaf() -> int:
    return 1


flow = fd.Flow("self", [leaf, fd.subflow("tests.recursive_self:flow", id="again")])
