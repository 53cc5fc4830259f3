"""`python app.py` is also an MCP server: a real `mcp` client over loopback lists and calls its tools."""

import ast
import asyncio
import base64

import httpx
import pytest

from tests.conftest import REPO, running_app

pytestmark = pytest.mark.slow


async def _session(url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(f"{url}gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def test_an_mcp_client_lists_the_tools_and_screens_a_radiograph(tmp_path):
    example = REPO / "examples/synthetic_wrist_abnormal.png"
    data_url = "data:image/png;base64," + base64.b64encode(example.read_bytes()).decode()

    async def work(session):
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        called = await session.call_tool("predict", {"file": data_url, "body_part": "auto", "explain": True})
        return tools, called

    with open(tmp_path / "app.log", "w") as log, running_app(log) as (url, _):
        tools, called = asyncio.run(_session(url, work))
        assert {"predict", "predict_study"} <= set(tools)
        for name in ("predict", "predict_study"):
            description = tools[name].description
            assert "not a diagnosis" in description and "unlike the images this model was trained on" in description
            assert {"body_part", "explain"} <= set(tools[name].inputSchema["properties"])
        assert not called.isError, called.content
        # Gradio returns a multi-output tool's answer as one text: a Python literal of [result, overlay file].
        result, overlay = ast.literal_eval(called.content[0].text)
        picture = httpx.get(overlay["url"], timeout=30)  # the overlay is served while the app runs
    assert result["body_part"] == "wrist" and 0.0 <= result["abnormal_prob"] <= 1.0
    assert result["is_abnormal"] and result["unlike_training"] < 1.0 and result["warnings"] == []
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


def test_both_runtimes_answer_the_same_through_the_api_and_mcp(tmp_path):
    from gradio_client import Client, handle_file

    example = REPO / "examples/synthetic_elbow_abnormal.png"
    data_url = "data:image/png;base64," + base64.b64encode(example.read_bytes()).decode()
    views = [handle_file(str(REPO / "examples/synthetic_hand_normal.png")) for _ in range(2)]

    async def work(session):
        called = await session.call_tool("predict", {"file": data_url, "body_part": "auto", "explain": True})
        return ast.literal_eval(called.content[0].text)[0]

    answers = {}
    for runtime in ("torch", "onnx"):
        args = ("--runtime", runtime, "--precision", "fp32")
        with open(tmp_path / f"{runtime}.log", "w") as log, running_app(log, None, *args) as (url, _):
            mcp_result = asyncio.run(_session(url, work))
            study = Client(url, verbose=False).predict(views, "auto", True, api_name="/predict_study")[0]
        answers[runtime] = (mcp_result, study)
        assert f"runtime {runtime}" in (tmp_path / f"{runtime}.log").read_text()  # the start-up line says it
    for torch_answer, onnx_answer in zip(answers["torch"], answers["onnx"]):
        assert torch_answer["body_part"] == onnx_answer["body_part"]
        assert torch_answer["is_abnormal"] == onnx_answer["is_abnormal"]
        assert torch_answer["warnings"] == onnx_answer["warnings"]
        assert onnx_answer["abnormal_prob"] == pytest.approx(torch_answer["abnormal_prob"], abs=1e-5)
