"""Half of a flow that contains itself through another module."""

from __future__ import annotations

import flowdsl as fd

flow = fd.Flow("a", [fd.subflow("tests.recursive_b:flow", id="b")])
