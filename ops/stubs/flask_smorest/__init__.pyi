# flask-smorest ships no type information (no py.typed, no stubs on PyPI). Its abort() is webargs' own, which
# is typed (NoReturn: mypy then knows the code after it does not run); everything else stays Any.
from typing import Any

from webargs.flaskparser import abort as abort

def __getattr__(name: str) -> Any: ...
