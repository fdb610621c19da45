"""The other half: this flow contains the flow of `recursive_a`."""

from __future__ import annotations

import flowdsl as fd

flow = fd.Flow("b", [fd.subflow("tests.recursive_a:flow", id="a")])
