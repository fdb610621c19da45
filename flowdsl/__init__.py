"""flowdsl: workflows from plain Python functions.

Mark functions with `@node` and `@batch`; flowdsl reads their signatures to
infer the edges, builds a serializable blueprint, and runs it with one engine
that has a synchronous face (`flow.run()`) and an asynchronous one
(`await flow.arun()`).
"""

import logging as _logging

from ._blueprint import Blueprint as Blueprint
from ._blueprint import EdgeSpec as EdgeSpec
from ._blueprint import NodeSpec as NodeSpec
from ._cancel import CancelToken as CancelToken
from ._classnode import NodeClass as NodeClass
from ._compose import loop as loop
from ._compose import subflow as subflow
from ._context import Context as Context
from ._events import Event as Event
from ._events import EventBus as EventBus
from ._flow import Flow as Flow
from ._flow import resume as resume
from ._middleware import CallInfo as CallInfo
from ._middleware import Middleware as Middleware
from ._nodes import AsyncBatchNode as AsyncBatchNode
from ._nodes import AsyncNode as AsyncNode
from ._nodes import BatchNode as BatchNode
from ._nodes import From as From
from ._nodes import Node as Node
from ._nodes import batch as batch
from ._nodes import node as node
from ._pauses import sleep as sleep
from ._pauses import wait_for as wait_for
from ._result import Action as Action
from ._result import ItemError as ItemError
from ._result import RunError as RunError
from ._result import RunResult as RunResult
from .exceptions import BatchInputError as BatchInputError
from .exceptions import BlueprintError as BlueprintError
from .exceptions import DefinitionChanged as DefinitionChanged
from .exceptions import DefinitionError as DefinitionError
from .exceptions import ExpressionError as ExpressionError
from .exceptions import FlowCancelled as FlowCancelled
from .exceptions import FlowdslError as FlowdslError
from .exceptions import FlowFailed as FlowFailed
from .exceptions import FlowWarning as FlowWarning
from .exceptions import LoopLimitExceeded as LoopLimitExceeded
from .exceptions import MissingInputError as MissingInputError
from .exceptions import NodeTimeout as NodeTimeout
from .exceptions import RecordedError as RecordedError
from .exceptions import RunLocked as RunLocked
from .store import MemoryStore as MemoryStore
from .store import SqliteStore as SqliteStore

__all__ = [
    "Action",
    "AsyncBatchNode",
    "AsyncNode",
    "BatchInputError",
    "BatchNode",
    "Blueprint",
    "BlueprintError",
    "CallInfo",
    "CancelToken",
    "Context",
    "DefinitionChanged",
    "DefinitionError",
    "EdgeSpec",
    "Event",
    "EventBus",
    "ExpressionError",
    "Flow",
    "FlowCancelled",
    "FlowdslError",
    "FlowFailed",
    "FlowWarning",
    "From",
    "ItemError",
    "LoopLimitExceeded",
    "MemoryStore",
    "Middleware",
    "MissingInputError",
    "Node",
    "NodeClass",
    "NodeSpec",
    "NodeTimeout",
    "RecordedError",
    "RunError",
    "RunLocked",
    "RunResult",
    "SqliteStore",
    "batch",
    "loop",
    "node",
    "resume",
    "sleep",
    "subflow",
    "wait_for",
]

__version__ = "0.1.0"

# A library logs; the application decides where it goes (nowhere by default).
_logging.getLogger("flowdsl").addHandler(_logging.NullHandler())
