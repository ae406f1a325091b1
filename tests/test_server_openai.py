"""The OpenAI-compatible API, driven by the official `openai` client against a real engine process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.engine_proc import ROOT, engine_env, kill_engines, poll, record

pytestmark = pytest.mark.timeout(300)
SCRIPTED = ROOT / "tests" / "engine_scripted.py"
ANALYSIS_THEN_FINAL = ("<|channel|>analysis<|message|>User asks capital of France. Paris.<|end|>"
                       "<|start|>assistant<|channel|>final<|message|>The capital of France is Paris.<|return|>")
TOOL_CALL = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>'
# A Hermes/Qwen2.5-style template: mlx-lm's tokenizer wrapper knows its <tool_call> JSON format.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.tool_calls %}<|im_start|>assistant\n{% for tool_call in message.tool_calls %}"
    "{% if tool_call.function is defined %}{% set tool_call = tool_call.function %}{% endif %}"
    "<tool_call>{\"name\": \"{{ tool_call.name }}\", \"arguments\": {{ tool_call.arguments | tojson }}}</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}


class Engine:
    def __init__(self, home: Path, steer: Path) -> None:
        self.home, self.steer = home, steer
        self.address = record(home)["address"]
        self.client = openai.OpenAI(base_url=f"{self.address}/v1", api_key="unused-on-loopback", max_retries=0)

    def script(self, text: str | None, tokenizer: Path | None = None) -> None:
        """Make the next generations emit ``text`` (harmony tokens, or ``tokenizer``'s then its end
        of turn), or (None) whatever the model says."""
        path = self.steer / "script.json"
        if text is None:
            path.unlink(missing_ok=True)
        elif tokenizer is None:
            from optiq_tui.engine.harmony import harmony_encoding

            path.write_text(json.dumps(harmony_encoding().encode(text, allowed_special="all")))
        else:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
            path.write_text(json.dumps([*tok.encode(text).ids, tok.token_to_id("<|im_end|>")]))

    def prompts(self) -> list[str]:
        path = self.steer / "prompts.txt"
        return path.read_text().split("\n<<END>>\n")[:-1] if path.exists() else []

    def job(self, job_id: str | int) -> dict:
        return httpx.get(f"{self.address}/v1/jobs/{job_id}").json()

    def jobs(self, state: str) -> list[dict]:
        return [j for j in httpx.get(f"{self.address}/v1/jobs").json()["jobs"]
                if j["kind"] == "complete" and j["state"] == state]

    def arm_gate(self) -> None:
        """The next generation stops after its first event until :meth:`open_gate`."""
        for name in ("held", "open"):
            (self.steer / name).unlink(missing_ok=True)
        (self.steer / "armed").touch()

    def open_gate(self) -> None:
        (self.steer / "armed").unlink(missing_ok=True)
        (self.steer / "open").touch()


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_llama_dir, tiny_gpt_oss_dir, tiny_qwen3_dir):
    home = tmp_path_factory.mktemp("openai-home")
    steer = tmp_path_factory.mktemp("steer")
    (home / "models").mkdir(parents=True)
    for name, folder in (("tiny-llama", tiny_llama_dir), ("tiny-gpt-oss", tiny_gpt_oss_dir),
                         ("tiny-qwen3", tiny_qwen3_dir)):
        (home / "models" / name).symlink_to(folder)
    tools = home / "models" / "tiny-tools"
    shutil.copytree(tiny_llama_dir, tools)
    config = json.loads((tools / "tokenizer_config.json").read_text())
    (tools / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TOOLS_TEMPLATE}))
    env = engine_env(OPTIQ_HOME=str(home), OPTIQ_TEST_DIR=str(steer), HF_HUB_OFFLINE="1",
                     HF_HOME=str(home / "hf"))
    proc = subprocess.Popen([sys.executable, str(SCRIPTED), "serve", "--idle-timeout", "0"], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        poll(lambda: (record(home) or {}).get("pid") == proc.pid or proc.poll() is not None, what="engine record")
        assert proc.poll() is None, proc.stdout.read()
        yield Engine(home, steer)
    finally:
        kill_engines(home, proc)


def test_models_lists_the_library_with_quantization(engine):
    models = {m.id: m for m in engine.client.models.list()}
    assert {"tiny-llama", "tiny-gpt-oss"} <= models.keys()
    assert models["tiny-llama"].owned_by == "optiq"
    assert models["tiny-llama"].model_extra["quantization"]  # e.g. "bf16" or "4-bit"


def test_chat_completion_streamed_equals_not_streamed(engine):
    engine.script(None)
    ask = dict(model="tiny-llama", messages=[{"role": "user", "content": "Hello"}], temperature=0.0,
               max_tokens=8, seed=1)
    raw = engine.client.chat.completions.with_raw_response.create(**ask)
    done = raw.parse()
    assert "x-optiq-effort" not in raw.headers
    text = done.choices[0].message.content
    assert text and done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 8 and done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + 8
    chunks = list(engine.client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8
    # A repeated conversation reuses the engine's prompt cache.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


def test_stop_string_cuts_the_answer(engine):
    engine.script("<|channel|>final<|message|>Sunny and warm, then rain.<|return|>")
    done = engine.client.chat.completions.create(model="tiny-gpt-oss", messages=[{"role": "user", "content": "x"}],
                                                 stop=[", then"], max_tokens=20)
    assert done.choices[0].message.content == "Sunny and warm"
    assert done.choices[0].finish_reason == "stop"


def test_harmony_reasoning_in_both_fields_never_in_content(engine):
    engine.script(ANALYSIS_THEN_FINAL)
    ask = dict(model="tiny-gpt-oss", messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=64)
    done = engine.client.chat.completions.create(**ask)
    message = done.choices[0].message
    assert message.content == "The capital of France is Paris."
    assert message.model_extra["reasoning"] == message.model_extra["reasoning_content"] == \
        "User asks capital of France. Paris."
    assert done.usage.completion_tokens_details.reasoning_tokens == 8
    chunks = list(engine.client.chat.completions.create(**ask, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "The capital of France is Paris."
    reasoning = [(d.model_extra or {}).get("reasoning") or "" for d in deltas]
    assert "".join(reasoning) == "User asks capital of France. Paris."
    assert reasoning == [(d.model_extra or {}).get("reasoning_content") or "" for d in deltas]
    assert not any("<|" in (d.content or "") for d in deltas)


def test_reasoning_effort_reaches_the_harmony_prompt_and_is_reported(engine):
    engine.script("<|channel|>final<|message|>Hi.<|return|>")
    user = {"role": "user", "content": "Hello"}
    earlier = [{"role": "user", "content": "Before"},
               {"role": "assistant", "content": "Answer before", "reasoning_content": "SECRET THOUGHT"}, user]
    for effort in ("high", "low"):
        raw = engine.client.chat.completions.with_raw_response.create(
            model="tiny-gpt-oss", messages=earlier, reasoning_effort=effort, max_tokens=8)
        assert raw.headers["x-optiq-effort"] == effort
        prompt = engine.prompts()[-1]
        assert f"Reasoning: {effort}" in prompt
        assert "Answer before" in prompt and "SECRET THOUGHT" not in prompt
    # An effort the model cannot honour is accepted, and the header says what was done instead.
    raw = engine.client.chat.completions.with_raw_response.create(
        model="tiny-gpt-oss", messages=[user], reasoning_effort="minimal", max_tokens=8)
    assert raw.headers["x-optiq-effort"] == "medium (asked 'minimal'; this model takes low, medium, high)"
    assert "Reasoning: medium" in engine.prompts()[-1]
    engine.script(None)
    raw = engine.client.chat.completions.with_raw_response.create(
        model="tiny-llama", messages=[user], reasoning_effort="high", max_tokens=2)
    assert raw.headers["x-optiq-effort"].startswith("ignored (")


def test_think_template_effort_switches_thinking(engine):
    engine.script(None)
    ask = dict(model="tiny-qwen3", messages=[{"role": "user", "content": "Hello"}], max_tokens=2)
    on = engine.client.chat.completions.with_raw_response.create(**ask, reasoning_effort="high")
    off = engine.client.chat.completions.with_raw_response.create(**ask, reasoning_effort="low")
    assert on.headers["x-optiq-effort"] == "on (asked 'high'; this model takes on, off)"
    assert off.headers["x-optiq-effort"] == "off (asked 'low'; this model takes on, off)"
    assert off.parse().usage.prompt_tokens > on.parse().usage.prompt_tokens  # the empty think block
    assert "<think>\n\n</think>" in engine.prompts()[-1] and "<think>" not in engine.prompts()[-2]


def test_tool_call_round_trip(engine):
    engine.script(TOOL_CALL)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    done = engine.client.chat.completions.create(model="tiny-gpt-oss", messages=ask, tools=[WEATHER_TOOL],
                                                 max_tokens=40)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert not choice.message.content
    assert "get_weather" in engine.prompts()[-1] and "namespace functions" in engine.prompts()[-1]
    chunks = list(engine.client.chat.completions.create(model="tiny-gpt-oss", messages=ask, tools=[WEATHER_TOOL],
                                                        max_tokens=40, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # The tool's result goes back; the model answers from it.
    engine.script("<|channel|>final<|message|>Sunny.<|return|>")
    follow = [*ask, choice.message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}]
    answer = engine.client.chat.completions.create(model="tiny-gpt-oss", messages=follow, tools=[WEATHER_TOOL],
                                                   max_tokens=20)
    assert answer.choices[0].message.content == "Sunny."
    prompt = engine.prompts()[-1]
    assert "to=functions.get_weather" in prompt
    assert '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"sky": "sunny"}' in prompt


def test_template_tool_call_round_trip(engine):
    """A chat template's <tool_call> JSON, parsed by mlx-lm's parser for it (json_tools)."""
    tools_dir = engine.home / "models" / "tiny-tools"
    engine.script('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', tools_dir)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    chunks = list(engine.client.chat.completions.create(model="tiny-tools", messages=ask, tools=[WEATHER_TOOL],
                                                        max_tokens=200, temperature=0.0, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [tc.function.name for tc in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert '"name": "get_weather"' in engine.prompts()[-1]  # the tools reached the template
    engine.script("Sunny.", tools_dir)
    follow = [*ask, {"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0].id, "type": "function", "function": {"name": "get_weather", "arguments": calls[0].function.arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"}]
    answer = engine.client.chat.completions.create(model="tiny-tools", messages=follow, tools=[WEATHER_TOOL],
                                                   max_tokens=20, temperature=0.0)
    assert answer.choices[0].message.content == "Sunny."
    prompt = engine.prompts()[-1]
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in prompt
    assert "<|im_start|>tool\nsunny" in prompt


def test_responses_with_streaming_events_and_follow_up(engine):
    engine.script(ANALYSIS_THEN_FINAL)
    first = engine.client.responses.create(model="tiny-gpt-oss", input="Capital of France?",
                                           reasoning={"effort": "low"}, max_output_tokens=64)
    assert first.output_text == "The capital of France is Paris."
    assert [item.type for item in first.output] == ["reasoning", "message"]
    assert first.output[0].content[0].text == "User asks capital of France. Paris."
    assert first.usage.output_tokens_details.reasoning_tokens == 8
    assert "Reasoning: low" in engine.prompts()[-1]
    events = list(engine.client.responses.create(
        model="tiny-gpt-oss", input=[{"role": "user", "content": "And Germany?"}], stream=True,
        previous_response_id=first.id, max_output_tokens=64))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text == "The capital of France is Paris."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    prompt = engine.prompts()[-1]  # the follow-up carries the first answer, not its reasoning
    assert "Capital of France?" in prompt and "The capital of France is Paris." in prompt
    assert "User asks" not in prompt and "And Germany?" in prompt


def test_disconnect_mid_stream_cancels_the_generation(engine):
    engine.script(None)
    engine.arm_gate()
    try:
        with engine.client.chat.completions.with_streaming_response.create(
                model="tiny-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=200,
                temperature=0.0, stream=True) as raw:
            job_id = raw.headers["x-optiq-job"]
            poll(lambda: (engine.steer / "held").exists(), what="the generation to reach the gate")
            assert engine.job(job_id)["state"] == "running"
        # The client is gone: the engine asks the job to stop while it is still held.
        poll(lambda: engine.job(job_id)["cancel_requested"], what="the cancel")
    finally:
        engine.open_gate()
    poll(lambda: engine.job(job_id)["state"] == "cancelled", what="the job to end")
    events = httpx.get(f"{engine.address}/v1/jobs/{job_id}/events").text.splitlines()
    texts = [e for e in events if '"AnswerDelta"' in e or '"ReasoningDelta"' in e]
    assert len(texts) <= 2  # stopped within a token of the gate, not after 200
    again = engine.client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=2)
    assert again.choices[0].finish_reason == "length"  # the engine is free again


def test_concurrent_requests_are_batched_with_the_same_answers(engine):
    """Requests queued behind a running one join it in one batch; greedy answers stay those of each alone."""
    from concurrent.futures import ThreadPoolExecutor

    engine.script(None)
    questions = ["Hello", "What is the capital of France?", "def add(a, b):"]

    def ask(question: str) -> str:
        reply = engine.client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": question}], temperature=0.0, max_tokens=12)
        return reply.choices[0].message.content

    alone = [ask(q) for q in questions]
    engine.arm_gate()
    with ThreadPoolExecutor(3) as pool:
        try:
            first = pool.submit(ask, questions[0])
            poll(lambda: (engine.steer / "held").exists(), what="the first answer to reach the gate")
            rest = [pool.submit(ask, q) for q in questions[1:]]
            poll(lambda: len(engine.jobs("queued")) == 2, what="the others to queue behind it")
            queued = [j["id"] for j in engine.jobs("queued")]
            driver = engine.jobs("running")[0]["id"]
        finally:
            engine.open_gate()
        together = [first.result(), *(f.result() for f in rest)]
    assert together == alone
    # Taken into the running job's batch: they started before it ended (alone, they would queue behind it).
    assert all(engine.job(j)["started"] < engine.job(driver)["finished"] for j in queued)
    assert all(engine.job(j)["state"] == "done" for j in [driver, *queued])


def test_errors_are_openai_error_objects(engine):
    c = engine.client
    with pytest.raises(openai.NotFoundError, match="no model named"):
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "x"}],
                                  temperature="hot")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="role"):
        c.chat.completions.create(model="tiny-llama", messages=[{"role": "robot", "content": "x"}])
    r = httpx.post(f"{engine.address}/v1/chat/completions", content=b"{oops")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{engine.address}/v1/chat/completions", content=b" " * (2 << 20))
    assert r.status_code == 413 and "request body over" in r.json()["error"]["message"]


# ---- the same routes in-process, behind the engine's key check (a non-loopback bind) ----


@pytest.fixture
def keyed(optiq_home, tiny_llama_dir):
    from starlette.testclient import TestClient

    from optiq_tui.engine.service import EngineService
    from optiq_tui.server import state
    from optiq_tui.server.app import build_app
    from optiq_tui.server.openai import openai_routes

    (optiq_home / "models").mkdir(parents=True, exist_ok=True)
    (optiq_home / "models" / "tiny-llama").symlink_to(tiny_llama_dir)
    service = EngineService()
    key = state.api_key(create=True)
    http = TestClient(build_app(service, api_key=key, extra_routes=openai_routes(service)))
    yield service, key, http
    service.close()


def test_without_the_key_401(keyed):
    service, key, http = keyed
    for given in ("wrong", ""):
        client = openai.OpenAI(base_url="http://testserver/v1", api_key=given or "x", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert service.jobs() == []
    client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
    assert "tiny-llama" in [m.id for m in client.models.list()]


def test_a_model_that_will_not_fit_is_503_and_starts_nothing(keyed, monkeypatch):
    from optiq_tui.engine import loader

    service, key, http = keyed
    monkeypatch.setattr(loader, "available_memory", lambda: (1 << 20, "test: 1 MiB free"))
    client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503 and caught.value.code == "model_too_large"
    assert "needs about" in caught.value.message
    assert service.jobs() == []


@pytest.mark.demo
def test_demo_model_answers_streamed_and_not(engine, demo_model_dir):
    (engine.home / "models" / demo_model_dir.name).symlink_to(demo_model_dir)
    engine.script(None)
    ask = dict(model=demo_model_dir.name, messages=[{"role": "user", "content": "What is the capital of France?"}],
               temperature=0.0, max_completion_tokens=12)
    done = engine.client.chat.completions.create(**ask)
    text = done.choices[0].message.content
    assert "Paris" in text
    streamed = "".join(c.choices[0].delta.content or "" for c in engine.client.chat.completions.create(**ask, stream=True)
                       if c.choices)
    assert streamed == text
    reply = engine.client.responses.create(model=demo_model_dir.name, input="What is the capital of France?",
                                           temperature=0.0, max_output_tokens=12)
    assert reply.output_text == text


# ---- the stream-side pieces on their own ----


@pytest.mark.parametrize("text", [
    '<|channel|>analysis to=functions.get_weather<|message|>{"city":"Rome"}<|call|>',
    '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant to=functions.get_weather'
    '<|channel|>commentary <|constrain|>json<|message|>{"city":"Rome"}<|call|>',
])
def test_harmony_tool_calls_on_commentary_or_analysis(text):
    from optiq_tui.engine.completion import HarmonyToolCalls
    from optiq_tui.engine.harmony import HarmonyParser, harmony_encoding

    enc = harmony_encoding()
    calls, out = [], []
    parser = HarmonyToolCalls(HarmonyParser(enc), calls.append)
    for token in enc.encode(text, allowed_special="all"):
        out += parser.feed(token)
    out += parser.finish()
    assert [c.name for c in calls if c.id] == ["get_weather"]
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Rome"}
    assert "Rome" not in "".join(d.text for d in out)  # the call is not reasoning or answer


def test_stop_strings_split_across_pieces():
    from optiq_tui.engine.completion import StopStrings

    stops = StopStrings(["END", "\n\n"])
    pieces = [stops.feed(p) for p in ["Hello E", "N", "ough said", "E", "ND more"]]
    assert "".join(pieces) == "Hello ENough said" and stops.hit
    assert stops.finish() == ""


def test_responses_template_tool_round_trip_via_previous_response_id(engine):
    """Responses-shape tools in, a function_call item out; its output goes back with previous_response_id."""
    tools_dir = engine.home / "models" / "tiny-tools"
    engine.script('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', tools_dir)
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    first = engine.client.responses.create(model="tiny-tools", input="Weather in Paris?", tools=[tool],
                                           max_output_tokens=200, temperature=0.0)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert '"name": "get_weather"' in engine.prompts()[-1]
    engine.script("Sunny.", tools_dir)
    follow = engine.client.responses.create(
        model="tiny-tools", previous_response_id=first.id, tools=[tool], max_output_tokens=20, temperature=0.0,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}])
    assert follow.output_text == "Sunny."
    prompt = engine.prompts()[-1]
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in prompt
    assert "<|im_start|>tool\nsunny" in prompt


def test_responses_harmony_tool_call_streamed_events_and_result(engine):
    engine.script(TOOL_CALL)
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    events = list(engine.client.responses.create(model="tiny-gpt-oss", input="Weather in Paris?", tools=[tool],
                                                 stream=True, max_output_tokens=40))
    kinds = [e.type for e in events]
    calls = [i for i, e in enumerate(events) if e.type == "response.output_item.added"
             and e.item.type == "function_call"]
    assert len(calls) == 1
    start = calls[0]
    tail = [k for k in kinds[start:] if k != "response.function_call_arguments.delta"]
    assert tail == ["response.output_item.added", "response.function_call_arguments.done",
                    "response.output_item.done", "response.completed"]
    assert "response.function_call_arguments.delta" in kinds[start:]
    assert "response.output_text.delta" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    final = events[-1].response
    call = [o for o in final.output if o.type == "function_call"][0]
    assert call.name == "get_weather" and json.loads(call.arguments) == json.loads(arguments) == {"city": "Paris"}
    assert events[start].item.call_id == call.call_id
    engine.script("<|channel|>final<|message|>Sunny.<|return|>")
    follow = engine.client.responses.create(
        model="tiny-gpt-oss", previous_response_id=final.id, tools=[tool], max_output_tokens=40,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}])
    assert follow.output_text == "Sunny."
    prompt = engine.prompts()[-1]
    assert "to=functions.get_weather" in prompt and '{"sky": "sunny"}' in prompt


def test_tool_choice_required_is_refused_not_ignored(engine):
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    with pytest.raises(openai.BadRequestError, match="required"):
        engine.client.chat.completions.create(model="tiny-gpt-oss", messages=ask, tools=[WEATHER_TOOL],
                                              tool_choice="required", max_tokens=8)
    with pytest.raises(openai.BadRequestError, match="required"):
        engine.client.responses.create(model="tiny-gpt-oss", input="Weather?", tools=[tool],
                                       tool_choice="required", max_output_tokens=8)


def test_an_engine_bound_beyond_loopback_answers_the_openai_client_only_with_its_key(optiq_home, tiny_llama_dir):
    # A real engine process on 0.0.0.0 (what `optiq-chat serve --host 0.0.0.0` does for a LAN).
    from optiq_tui.server import state
    from tests.engine_proc import kill_engines, record, start_engine
    from tests.ui_util import install_model

    install_model(tiny_llama_dir, optiq_home, "tiny-llama")
    proc = start_engine(optiq_home, "--host", "0.0.0.0", "--idle-timeout", "0")
    try:
        address = record(optiq_home)["address"].replace("0.0.0.0", "127.0.0.1")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{address}/v1", api_key="wrong", max_retries=0).models.list()
        keyed = openai.OpenAI(base_url=f"{address}/v1", api_key=state.api_key(), max_retries=0)
        assert "tiny-llama" in [m.id for m in keyed.models.list().data]
    finally:
        kill_engines(optiq_home, proc)
