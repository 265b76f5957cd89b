"""Tool-call parsing: model text -> action.

Every environment receives the raw text a model produced and turns it into a
:class:`ToolCall` with an :class:`ActionParser`.  Parsing never raises for model
text: a malformed input gives a :class:`ParsedAction` whose ``error`` explains
what was wrong, which the environment reports as an in-episode outcome.

Formats (``ActionParser(format=...)``):

``plain``
    The action is the whole text (one non-empty line).
``tags``
    ``<think>…</think>`` (optional) followed by ``<action>…</action>``.
``react``
    ``Thought: …`` followed by ``Action: …``.
``hermes``
    ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` (Hermes / Qwen).
``openai``
    An OpenAI function call as JSON: ``{"name": …, "arguments": "<json>"}``,
    ``{"function": {…}}`` or ``{"tool_calls": [{"function": {…}}]}``.

For environments with a single one-argument tool (text games: ``act(command)``)
the ``plain``, ``tags`` and ``react`` payload is the argument itself.  For
environments with several tools (web pages) the payload is a call expression
such as ``click(12)`` or ``type(3, "blue shoes")``.

Example:
    >>> parser = ActionParser("tags")
    >>> parser.parse("<think>go east first</think><action>go east</action>").command
    'go east'
    >>> parser.parse("go east").error
    'no <action>...</action> block found; answer with <action>your command</action>'
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("plain", "tags", "react", "hermes", "openai")

#: Characters of Unicode category ``Cf`` that models emit by accident and that
#: carry no meaning for an action (zero-width spaces and joiners, BOM).
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)

#: Characters that end a line (``str.splitlines``): a command holding one would be several commands to a
#: line-based interpreter (``look\rlook`` plays ``look`` twice in TextWorld).
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


@dataclass(frozen=True)
class ToolSpec:
    """One tool an environment accepts.

    Example:
        >>> ToolSpec("click", ("element_id",), "Click an element by its id.").signature()
        'click(element_id)'
    """

    name: str
    parameters: tuple[str, ...]
    description: str = ""

    def signature(self) -> str:
        return f"{self.name}({', '.join(self.parameters)})"

    def json_schema(self) -> dict[str, Any]:
        """The tool as an OpenAI / Hermes function schema (every argument a string)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {p: {"type": "string"} for p in self.parameters},
                    "required": list(self.parameters),
                },
            },
        }


#: The single tool of text games: send one command to the game.
ACT_TOOL = ToolSpec("act", ("command",), "Send one text command to the game, e.g. 'open door'.")


@dataclass(frozen=True)
class ToolCall:
    """A parsed call: tool name and string arguments.

    Example:
        >>> ToolCall("click", {"element_id": "7"}).expression()
        'click("7")'
    """

    name: str
    arguments: Mapping[str, str] = field(default_factory=dict)

    def expression(self) -> str:
        """The call written as ``name("arg", ...)``, which :func:`parse_call_expression` reads back."""
        args = ", ".join(json.dumps(v) for v in self.arguments.values())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class ParsedAction:
    """The result of parsing one model output.

    Exactly one of ``call`` and ``error`` is set.
    """

    raw: str
    call: ToolCall | None = None
    error: str | None = None
    thought: str | None = None
    #: The command as the environment executes it: the argument of a text game's single
    #: tool (``go north``), else the call expression (``click("7")``).
    command: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ActionParser:
    """Parse model text into a :class:`ToolCall` for a given format and tool set.

    Args:
        format: one of :data:`FORMATS`.
        tools: the tools the environment accepts (default: the text-game ``act`` tool).
        max_chars: longer inputs are rejected (a model that rambles does not act).

    Example:
        >>> ActionParser("hermes").parse(
        ...     '<tool_call>{"name": "act", "arguments": {"command": "take key"}}</tool_call>'
        ... ).command
        'take key'
    """

    def __init__(
        self,
        format: str = "plain",
        tools: Sequence[ToolSpec] = (ACT_TOOL,),
        max_chars: int = 4000,
    ):
        if format not in FORMATS:
            raise ValueError(f"unknown action format {format!r}; choose one of {', '.join(FORMATS)}")
        if not tools:
            raise ValueError("an ActionParser needs at least one tool")
        self.format = format
        self.tools = {t.name: t for t in tools}
        self.max_chars = max_chars
        self._single_argument_tool = self._find_single_argument_tool()
        self._parse_format = getattr(self, f"_parse_{format}")

    # -- public -----------------------------------------------------------------
    @property
    def single_argument_tool(self) -> ToolSpec | None:
        """The tool whose argument *is* the payload of plain/tags/react text, if there is one."""
        return self._single_argument_tool

    def _find_single_argument_tool(self) -> ToolSpec | None:
        if len(self.tools) == 1:
            (tool,) = self.tools.values()
            if len(tool.parameters) == 1:
                return tool
        return None

    def parse(self, text: Any) -> ParsedAction:
        """Parse ``text``; never raises."""
        try:
            return self._parse(text)
        except Exception as exc:  # noqa: BLE001 - model text must never crash an episode
            return ParsedAction(raw=str(text)[:200], error=f"could not parse the action: {exc}")

    def to_call(self, command: str) -> ToolCall:
        """The :class:`ToolCall` of a command as the environment executes it (``go north``, ``click(3)``).

        Raises ``ValueError`` if the command is not a valid call for these tools.
        """
        parsed = self._payload(command, command)
        if parsed.error:
            raise ValueError(parsed.error)
        assert parsed.call is not None
        return parsed.call

    def format_command(self, command: str, thought: str | None = None) -> str:
        """Write ``command`` as a model would in this format (the inverse of :meth:`parse`).

        Scripted policies (random, expert) use it so that they go through the same parsing
        as a model.

        Example:
            >>> ActionParser("react").format_command("open door", thought="it is closed")
            'Thought: it is closed\\nAction: open door'
        """
        call = self.to_call(command)
        if self.format == "plain":
            return command
        if self.format == "tags":
            think = f"<think>{thought}</think>" if thought else ""
            return f"{think}<action>{command}</action>"
        if self.format == "react":
            return f"Thought: {thought or 'I will act.'}\nAction: {command}"
        payload = {"name": call.name, "arguments": dict(call.arguments)}
        if self.format == "hermes":
            return f"<tool_call>{json.dumps(payload)}</tool_call>"
        return json.dumps({"name": call.name, "arguments": json.dumps(dict(call.arguments))})

    def instructions(self) -> str:
        """Text for the prompt that tells a model how to write actions in this format."""
        single = self.single_argument_tool
        if single is not None:
            example_payload = "go north"
            what = "one command"
        else:
            example_payload = next(iter(self.tools.values())).signature()
            what = "exactly one tool call: " + "; ".join(
                f"{t.signature()} - {t.description}" for t in self.tools.values()
            )
        if self.format == "plain":
            return f"Reply with {what}, on a single line, and nothing else. Example: {example_payload}"
        if self.format == "tags":
            return (
                f"You may think inside <think>...</think>, then give {what} inside "
                f"<action>...</action>. Example: <think>reasoning</think><action>{example_payload}</action>"
            )
        if self.format == "react":
            return f"Answer in two lines: 'Thought: <your reasoning>' then 'Action: <{what}>'."
        schemas = json.dumps([t.json_schema() for t in self.tools.values()])
        if self.format == "hermes":
            return (
                "Call exactly one tool, as <tool_call>{\"name\": <tool>, \"arguments\": {...}}</tool_call>. "
                f"Tools: {schemas}"
            )
        return f"Reply with one OpenAI function call as JSON {{\"name\": ..., \"arguments\": ...}}. Tools: {schemas}"

    # -- internals --------------------------------------------------------------
    def _parse(self, text: Any) -> ParsedAction:
        if isinstance(text, (bytes, bytearray)):
            return ParsedAction(raw=repr(bytes(text[:200])), error="the action is bytes, not text")
        if not isinstance(text, str):
            return ParsedAction(raw=repr(text)[:200], error=f"the action must be text, not {type(text).__name__}")
        raw = text
        if len(text) > self.max_chars:
            return ParsedAction(raw=raw[:200], error=f"the action is too long ({len(text)} > {self.max_chars} characters)")
        text, problem = sanitize_text(text)
        if problem:
            return ParsedAction(raw=raw, error=problem)
        if not text.strip():
            return ParsedAction(raw=raw, error="the action is empty")
        return self._parse_format(raw, text)

    def _payload(self, raw: str, payload: str, thought: str | None = None) -> ParsedAction:
        payload = payload.strip().strip("`").strip()
        if not payload:
            return ParsedAction(raw=raw, error="the action is empty", thought=thought)
        lines = [ln.strip() for ln in payload.splitlines() if ln.strip()]
        if len(lines) > 1:
            return ParsedAction(
                raw=raw, error=f"give exactly one action; got {len(lines)} lines", thought=thought
            )
        single = self.single_argument_tool
        if single is not None:
            return self._ok(raw, ToolCall(single.name, {single.parameters[0]: lines[0]}), thought)
        call, error = parse_call_expression(lines[0])
        if error:
            return ParsedAction(raw=raw, error=error, thought=thought)
        assert call is not None
        arguments: Any = call.arguments
        if arguments and all(k.isdigit() for k in arguments):
            arguments = [arguments[str(i)] for i in range(len(arguments))]
        return self._check_call(raw, call.name, arguments, thought)

    def command_text(self, call: ToolCall) -> str:
        """See :attr:`ParsedAction.command`."""
        single = self.single_argument_tool
        if single is not None and call.name == single.name:
            return call.arguments[single.parameters[0]]
        return call.expression()

    def _ok(self, raw: str, call: ToolCall, thought: str | None) -> ParsedAction:
        # Every successful parse ends here, so this is the one place where the *decoded* arguments are
        # checked: JSON and call-expression escapes (``\\u0000``, ``\\r``, lone surrogates) only exist now.
        values: dict[str, str] = {}
        for key, value in call.arguments.items():
            clean, problem = sanitize_argument(value)
            if problem:
                return ParsedAction(raw=raw, error=f"argument {key!r} of {call.name} {problem}", thought=thought)
            values[key] = clean
        call = ToolCall(call.name, values)
        if call.name == getattr(self.single_argument_tool, "name", None) and not next(iter(values.values()), ""):
            return ParsedAction(raw=raw, error="the action is empty", thought=thought)
        return ParsedAction(raw=raw, call=call, thought=thought, command=self.command_text(call))

    def _check_call(self, raw: str, name: Any, arguments: Any, thought: str | None = None) -> ParsedAction:
        if not isinstance(name, str) or name not in self.tools:
            known = ", ".join(self.tools)
            return ParsedAction(raw=raw, error=f"unknown tool {name!r}; available tools: {known}", thought=thought)
        tool = self.tools[name]
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return ParsedAction(raw=raw, error=f"tool arguments are not valid JSON: {exc.msg}", thought=thought)
        if isinstance(arguments, (list, tuple)):
            if len(arguments) != len(tool.parameters):
                return ParsedAction(
                    raw=raw, error=f"{tool.signature()} takes {len(tool.parameters)} argument(s), got {len(arguments)}",
                    thought=thought,
                )
            arguments = dict(zip(tool.parameters, arguments, strict=True))
        if not isinstance(arguments, Mapping):
            return ParsedAction(raw=raw, error="tool arguments must be an object", thought=thought)
        missing = [p for p in tool.parameters if p not in arguments]
        extra = [k for k in arguments if k not in tool.parameters]
        if missing or extra:
            detail = "; ".join(
                s for s in (missing and f"missing {', '.join(missing)}", extra and f"unexpected {', '.join(map(str, extra))}") if s
            )
            return ParsedAction(raw=raw, error=f"bad arguments for {tool.signature()}: {detail}", thought=thought)
        values: dict[str, str] = {}
        for key in tool.parameters:
            value = arguments[key]
            # JSON true/false/null are not commands, and NaN / Infinity would become the words "nan" / "inf".
            if isinstance(value, (dict, list, bool)) or value is None:
                return ParsedAction(raw=raw, error=f"argument {key!r} of {tool.name} must be a string or number", thought=thought)
            if isinstance(value, float) and not math.isfinite(value):
                return ParsedAction(raw=raw, error=f"argument {key!r} of {tool.name} must be a finite number", thought=thought)
            values[key] = str(value)
        return self._ok(raw, ToolCall(tool.name, values), thought)

    def _parse_plain(self, raw: str, text: str) -> ParsedAction:
        single = self._single_argument_tool
        if single is not None and text.isascii() and text.isprintable():
            # One line of clean text (the usual action): what _payload and _ok would make of it, minus the
            # line splitting and the sanitising that cannot change it; a step's parse is on every turn.
            command = text.strip().strip("`").strip()
            if command:
                return ParsedAction(raw=raw, call=ToolCall(single.name, {single.parameters[0]: command}), command=command)
        return self._payload(raw, text)

    _THINK = re.compile(r"<think>(.*?)</think>", re.S | re.I)
    _ACTION = re.compile(r"<action>(.*?)</action>", re.S | re.I)

    def _parse_tags(self, raw: str, text: str) -> ParsedAction:
        thought = "\n".join(m.strip() for m in self._THINK.findall(text)) or None
        outside_think = self._THINK.sub("", text)
        actions = self._ACTION.findall(outside_think)
        if not actions:
            if re.search(r"<action>", outside_think, re.I):
                return ParsedAction(raw=raw, error="unclosed <action> tag; close it with </action>", thought=thought)
            return ParsedAction(
                raw=raw,
                error="no <action>...</action> block found; answer with <action>your command</action>",
                thought=thought,
            )
        if len(actions) > 1:
            return ParsedAction(raw=raw, error=f"give exactly one <action> block; got {len(actions)}", thought=thought)
        if re.search(r"</?action\s*>", actions[0], re.I):  # <action><action>look</action></action>
            return ParsedAction(raw=raw, error="nested <action> tags; write <action>your command</action>", thought=thought)
        return self._payload(raw, actions[0], thought)

    _REACT_ACTION = re.compile(r"^\s*Action\s*:\s*(.*)$", re.M | re.I)
    _REACT_THOUGHT = re.compile(r"Thought\s*:\s*(.*?)(?=^\s*Action\s*:|\Z)", re.S | re.M | re.I)

    def _parse_react(self, raw: str, text: str) -> ParsedAction:
        m = self._REACT_THOUGHT.search(text)
        thought = m.group(1).strip() if m else None
        actions = self._REACT_ACTION.findall(text)
        if not actions:
            return ParsedAction(raw=raw, error="no 'Action:' line found; end with 'Action: <your action>'", thought=thought)
        if len(actions) > 1:
            return ParsedAction(raw=raw, error=f"give exactly one 'Action:' line; got {len(actions)}", thought=thought)
        if re.match(r"\s*Action\s*:", actions[0], re.I):  # Action: Action: look
            return ParsedAction(raw=raw, error="write the action once, as 'Action: <your action>'", thought=thought)
        return self._payload(raw, actions[0], thought)

    _TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S | re.I)

    def _parse_hermes(self, raw: str, text: str) -> ParsedAction:
        thought = "\n".join(m.strip() for m in self._THINK.findall(text)) or None
        blocks = self._TOOL_CALL.findall(text)
        if not blocks:
            return ParsedAction(
                raw=raw, error='no <tool_call>{"name": ..., "arguments": {...}}</tool_call> block found', thought=thought
            )
        if len(blocks) > 1:
            return ParsedAction(raw=raw, error=f"call exactly one tool; got {len(blocks)} <tool_call> blocks", thought=thought)
        obj, error = _load_json_object(blocks[0])
        if error:
            return ParsedAction(raw=raw, error=error, thought=thought)
        return self._check_call(raw, obj.get("name"), obj.get("arguments", obj.get("parameters", {})), thought)

    def _parse_openai(self, raw: str, text: str) -> ParsedAction:
        obj, error = _load_json_object(_strip_code_fence(text))
        if error:
            return ParsedAction(raw=raw, error=error)
        if "tool_calls" in obj:
            calls = obj["tool_calls"]
            if not isinstance(calls, list) or len(calls) != 1:
                n = len(calls) if isinstance(calls, list) else "a non-list of"
                return ParsedAction(raw=raw, error=f"call exactly one tool; got {n} tool_calls")
            obj = calls[0] if isinstance(calls[0], Mapping) else {}
        if "function_call" in obj:
            obj = obj["function_call"]
        if "function" in obj and isinstance(obj["function"], Mapping):
            obj = obj["function"]
        if not isinstance(obj, Mapping) or "name" not in obj:
            return ParsedAction(raw=raw, error='the function call needs a "name" field')
        return self._check_call(raw, obj.get("name"), obj.get("arguments", {}))


def sanitize_text(text: str) -> tuple[str, str | None]:
    """Normalize model text (NFKC, invisible characters dropped); report binary or unprintable input.

    Returns ``(clean_text, problem)``; ``problem`` is ``None`` when the text is usable.

    Example:
        >>> sanitize_text("go\u200b north")
        ('go north', None)
    """
    if text.isascii() and text.isprintable():  # the common case, already clean: NFKC and the checks change nothing
        return text, None
    if "\x00" in text:
        return text, "the action contains NUL bytes (binary data)"
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    bad = sorted(
        {
            f"U+{ord(c):04X}"
            for c in text
            if (unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in "\n\t\r")
            or unicodedata.category(c) == "Cf"
        }
    )
    if bad:
        return text, f"the action contains unprintable characters ({', '.join(bad[:5])})"
    return text, None


def sanitize_argument(value: str) -> tuple[str, str | None]:
    """Normalise one *decoded* tool argument and say what is wrong with it, if anything.

    Runs after JSON and call-expression escapes are decoded, where ``"\\u0000"`` has become a NUL and
    ``"\\r"`` a carriage return.  Tabs become spaces; line breaks, control characters (NUL, ESC),
    lone surrogates, private-use, unassigned and format characters are refused.  Returns
    ``(clean_value, problem)``; ``problem`` completes "argument 'x' of tool ..." and is ``None`` when
    the value is usable.

    Example:
        >>> sanitize_argument(" go\\tnorth ")
        ('go north', None)
        >>> sanitize_argument("look\\x00around")[1]
        'contains NUL bytes (binary data)'
    """
    if value.isascii() and value.isprintable():  # no tab, break or control character: only the strip applies
        return value.strip(), None
    if "\x00" in value:
        return value, "contains NUL bytes (binary data)"
    if any(c in _LINE_BREAKS for c in value):
        return value, "must be a single line"
    value = unicodedata.normalize("NFKC", value).translate(_INVISIBLE).replace("\t", " ").strip()
    bad = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn", "Cf")})
    if bad:
        return value, f"contains unprintable characters ({', '.join(bad[:5])})"
    return value, None


#: Verbs of the story-file interpreter itself rather than of the game: they write files into the working
#: directory (``save``, ``script``), load another episode's state (``restore``) or end / restart the story.
INTERPRETER_META_VERBS = frozenset(
    "save restore load script transcript unscript noscript quit q die restart undo".split()
)
# Inform runs "go east. open chest", "look, save" and "look then script" as several commands in one step.
_CHAINED = re.compile(r"[.,]|\bthen\b", re.I)


def interpreter_refusal(command: str) -> str | None:
    """Why a command must not reach a story-file interpreter (Z-machine / Inform games), else ``None``.

    Refused: backslash commands (dumb-frotz reads ``\\help``, ``\\q`` as its own escapes and can loop
    forever), the interpreter's meta-commands (:data:`INTERPRETER_META_VERBS`: saving, restoring,
    transcripts, quitting, restarting, undo, and their abbreviations) and several commands chained
    in one step with ``.``, ``,`` or ``then`` (which would also smuggle a meta-command past the check).

    Example:
        >>> interpreter_refusal("open the chest.") is None
        True
        >>> interpreter_refusal("SAVE game")
        "'SAVE game' is a command of the game's interpreter (save, restore, transcripts, quit, restart, undo), not of the game"
    """
    if "\\" in command:
        return f"{command[:60]!r} contains a backslash, which the game's interpreter reads as an escape command"
    body = command.strip().rstrip(".!?").strip()
    if _CHAINED.search(body):
        return f"{command[:60]!r} chains several commands; give one command per step"
    words = re.findall(r"[a-z]+", body.lower())
    if words and words[0] in INTERPRETER_META_VERBS:
        return (
            f"{command[:60]!r} is a command of the game's interpreter (save, restore, transcripts, quit, restart, "
            "undo), not of the game"
        )
    return None


_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*;?\s*$", re.S)


def parse_call_expression(text: str) -> tuple[ToolCall, None] | tuple[None, str]:
    """Parse ``name(arg, ...)`` with Python-literal or bare-word arguments.

    Example:
        >>> parse_call_expression('type(7, "red shoes")')[0]
        ToolCall(name='type', arguments={'0': '7', '1': 'red shoes'})
    """
    m = _CALL.match(text)
    if not m:
        return None, f"expected a tool call such as name(argument, ...); got {text[:80]!r}"
    name, body = m.group(1), m.group(2).strip()
    if not body:
        return ToolCall(name, {}), None
    try:
        node = ast.parse(f"f({body})", mode="eval").body
        assert isinstance(node, ast.Call)
        if node.keywords:
            args = {kw.arg or "": _literal(kw.value) for kw in node.keywords}
            if node.args:
                return None, "use either positional or keyword arguments, not both"
            return ToolCall(name, args), None
        return ToolCall(name, {str(i): _literal(a) for i, a in enumerate(node.args)}), None
    except (SyntaxError, ValueError):
        # Bare words such as click(submit button) are common in model output.
        parts = [p.strip().strip("'\"") for p in body.split(",")]
        return ToolCall(name, {str(i): p for i, p in enumerate(parts)}), None


def _literal(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    value = ast.literal_eval(node)
    if isinstance(value, (dict, list, tuple, set, complex)) or value is None:
        raise ValueError("arguments must be strings or numbers")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")  # 1e999 stays the text "1e999", never "inf"
    return str(value)


def _strip_code_fence(text: str) -> str:
    m = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    return m.group(1) if m else text


def _load_json_object(text: str) -> tuple[dict, None] | tuple[None, str]:
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        return None, f"the tool call is not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(obj, dict):
        return None, "the tool call must be a JSON object"
    return obj, None


def closest_action(command: str, candidates: Sequence[str]) -> str | None:
    """The candidate most similar to ``command`` (case-insensitive), or ``None`` if there are none.

    Used to project free-form text onto the admissible actions.

    Example:
        >>> closest_action("pick up the key", ["take key", "go north"])
        'take key'
    """
    if not candidates:
        return None
    lowered = command.lower().strip()
    for c in candidates:
        if c.lower() == lowered:
            return c
    words = set(re.findall(r"\w+", lowered))

    def score(candidate: str) -> tuple[float, float]:
        cw = set(re.findall(r"\w+", candidate.lower()))
        overlap = len(words & cw) / max(1, len(words | cw))
        return overlap, difflib.SequenceMatcher(None, lowered, candidate.lower()).ratio()

    return max(candidates, key=score)
