"""The bad-input catalogue: every page and CLI command, fed what users really paste and upload.

One parametrised test. Each case feeds one bad input to one surface and asserts:
  * a clear message: one line, containing what the case expects, no traceback;
  * for pages: no exception box, and the app still answers (the Overview renders afterwards);
  * for the CLI: exit status 2 and the message on stderr, prefixed `saelab <command>:`;
  * no half-written file: no `.<name>.*.tmp` left anywhere under the case's folders;
  * whatever the page shows back of the input is escaped (no live `<script>`, `javascript:` link or markdown image).
Pages run through app.py under AppTest on the tiny model; CLI commands run in-process through `saelab.cli.main`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from saelab.storage import SAE_CFG_FILE, SAE_WEIGHTS_FILE
from tests.fixtures_ui import build_feature_root, page_html, tiny_app

HOSTILE = '<script>alert(1)</script> ![x](http://127.0.0.1:9/pixel.png) [click](javascript:alert(1)) **b**'
GOOD_ROWS = "".join(f"review number {i} was {'great' if i % 2 else 'awful'},{i % 2}\n" for i in range(40))


@dataclass
class Env:
    root: Path  # a scratch folder for this case (SAELAB_FEATURES points at root / "features")
    sae: Path  # a good tiny SAE with dashboards

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Case:
    id: str
    surface: str  # "pages/<file>.py" or "cli"
    expect: str  # lower-case text the one-line message must contain
    act: Callable[..., object]  # pages: act(at, env) drives widgets; cli: act(env) → argv
    before: Callable[[Env], object] | None = None  # damage files before the page first opens


# ---------------------------------------------------------------- files the cases feed in


def _sae_copy(env: Env, name: str) -> Path:
    dest = env.root / name
    shutil.copytree(env.sae, dest)
    return dest


def _truncated_weights(env: Env) -> Path:
    sae = _sae_copy(env, "truncated")
    data = (sae / SAE_WEIGHTS_FILE).read_bytes()
    (sae / SAE_WEIGHTS_FILE).write_bytes(data[: len(data) // 3])
    return sae


def _corrupt_cfg(env: Env, text: str) -> Path:
    sae = _sae_copy(env, "badcfg")
    (sae / SAE_CFG_FILE).write_text(text)
    return sae


def _wrong_width(env: Env) -> Path:
    sae = _sae_copy(env, "wide")
    cfg = json.loads((sae / SAE_CFG_FILE).read_text())
    cfg["metadata"]["hook_name"] = "blocks.0.mlp.hook_post"  # 256 wide on the tiny model; the SAE reads 64
    (sae / SAE_CFG_FILE).write_text(json.dumps(cfg))
    meta = sae / "saelab.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        m["hook"] = "blocks.0.mlp.hook_post"
        meta.write_text(json.dumps(m))
    return sae


def _csv(env: Env, name: str, data: bytes) -> str:
    path = env.root / name
    path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------- page actions


def _prompt(text: str):
    def act(at: AppTest, env: Env) -> None:
        at.text_area(key="prompt_text").set_value(text)
        at.button[0].click().run()  # the form's Analyse button

    return act


def _explorer_query(latent: str):
    def act(at: AppTest, env: Env) -> None:
        at.query_params["latent"] = latent
        at.switch_page("pages/explorer.py").run()

    return act


def _sae_path(make: Callable[[Env], object], then: str | None = None):
    """Type a path into the Overview's sidebar box (then open page `then`, which loads that SAE)."""

    def act(at: AppTest, env: Env) -> None:
        at.switch_page("pages/overview.py").run()
        at.text_input(key="sae_custom_path").set_value(str(make(env))).run()
        if then is not None:
            at.switch_page(then).run()

    return act


def _upload(page_key: str, radio_key: str, data: bytes, name: str = "data.csv", after: Callable | None = None):
    def act(at: AppTest, env: Env) -> None:
        at.radio(key=radio_key).set_value("Upload a CSV").run()
        at.file_uploader(key=page_key).set_value((name, data, "text/csv")).run()
        if after is not None:
            after(at)

    return act


def _preset(raw: str):
    def act(at: AppTest, env: Env) -> None:
        at.text_area(key="steer_paste").set_value(raw).run()
        at.button(key="steer_load").click().run()

    return act


def _preset_json(**generation) -> str:
    gen = {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0, **generation}
    return json.dumps({"format": "saelab.steering_preset", "version": 1, "prompt": "Hi", "generation": gen,
                       "interventions": []})  # fmt: skip


def _numeric_target(bad: str) -> bytes:
    rows = "".join(f"text {i},{i * 1.5}\n" for i in range(30))
    return f"text,score\n{rows}odd one,{bad}\n".encode()


def _probe_numeric(at: AppTest) -> None:
    at.selectbox(key="probe_kind_u").set_value("numeric").run()


def _endpoint(page_key_url: str, page_key_model: str, button: str, url: str):
    def act(at: AppTest, env: Env) -> None:
        at.text_input(key=page_key_url).set_value(url)
        at.text_input(key=page_key_model).set_value("m")
        at.button(key=button).click().run()

    return act


def _damage_dashboards(name: str, data: bytes | None = None):
    """Replace (or truncate to a third) one file of the SAE's dashboards."""

    def before(env: Env) -> None:
        path = env.sae / "dashboards" / name
        path.write_bytes(data if data is not None else path.read_bytes()[: path.stat().st_size // 3])

    return before


def _nothing(at: AppTest, env: Env) -> None:
    pass


def _eval_judge(at: AppTest, env: Env) -> None:
    at.text_input[0].set_value("http://10.1.2.3:8080/v1")  # the form's Base URL box
    at.text_input[1].set_value("m")
    next(b for b in at.button if b.label == "Run evaluation").click().run()


def _circuits_long(at: AppTest, env: Env) -> None:
    long = " ".join(["word"] * 200)
    data = f"clean,corrupted,correct,wrong\n{long} Mary,{long} John, Mary, John\nA B,A C, x, y\n".encode()
    _upload("circ_upload", "circ_source", data)(at, env)


# ---------------------------------------------------------------- the catalogue

PAGE_CASES = [
    Case("prompt-empty", "pages/prompt_view.py", "type some text", _prompt("")),
    Case("prompt-whitespace", "pages/prompt_view.py", "type some text", _prompt("   \n\t  ")),
    Case("prompt-100k-tokens", "pages/prompt_view.py", "only the first", _prompt("token " * 100_000)),
    Case("prompt-hostile-markup", "pages/prompt_view.py", "", _prompt(HOSTILE)),
    Case("explorer-latent-out-of-range", "pages/explorer.py", "latent", _explorer_query("99999")),
    Case("explorer-latent-not-a-number", "pages/explorer.py", "latent", _explorer_query("abc")),
    Case("overview-root-path", "pages/overview.py", "not an sae", _sae_path(lambda env: "/")),
    Case("overview-name-too-long", "pages/overview.py", "longer than 255", _sae_path(lambda env: "/tmp/" + "x" * 300)),
    Case("overview-cfg-not-an-object", "pages/overview.py", "not a json object",
         _sae_path(lambda env: _corrupt_cfg(env, "[1, 2, 3]"))),
    Case("overview-cfg-corrupt-json", "pages/overview.py", "not valid json",
         _sae_path(lambda env: _corrupt_cfg(env, '{"d_in": 64,'))),
    Case("overview-outside-allowed-roots", "pages/overview.py", "outside the folders",
         _sae_path(lambda env: env.folder("elsewhere"))),
    Case("explorer-truncated-weights", "pages/overview.py", "not a readable safetensors",
         _sae_path(_truncated_weights, then="pages/explorer.py")),
    Case("probing-non-utf8", "pages/probing.py", "not valid utf-8",
         _upload("probe_upload", "probe_data", ("text,label\n" + GOOD_ROWS).encode() + b"caf\xe9 bad,1\n")),
    Case("probing-utf16", "pages/probing.py", "utf-16",
         _upload("probe_upload", "probe_data", ("text,label\n" + GOOD_ROWS).encode("utf-16"))),
    Case("probing-one-column", "pages/probing.py", "needs a text column",
         _upload("probe_upload", "probe_data", b"text\nonly\ncolumn\n")),
    Case("probing-duplicate-columns", "pages/probing.py", "duplicate column",
         _upload("probe_upload", "probe_data", b"text,label,label\na,1,0\nb,0,1\n")),
    Case("probing-one-class", "pages/probing.py", "class",
         _upload("probe_upload", "probe_data", ("text,label\n" + "".join(f"t {i},yes\n" for i in range(30))).encode())),
    Case("probing-inf-target", "pages/probing.py", "infinite",
         _upload("probe_upload", "probe_data", _numeric_target("inf"), after=_probe_numeric)),
    Case("probing-nan-target", "pages/probing.py", "not numeric",
         _upload("probe_upload", "probe_data", _numeric_target("NaN"), after=_probe_numeric)),
    Case("probing-empty-file", "pages/probing.py", "empty", _upload("probe_upload", "probe_data", b"  \n")),
    Case("probing-hostile-class-names", "pages/probing.py", "",
         _upload("probe_upload", "probe_data", ("text,label\n" + "".join(
             f"t {i},{HOSTILE if i % 2 else 'plain'}\n" for i in range(30))).encode())),
    Case("circuits-prompts-too-long", "pages/circuits.py", "limited to 128 tokens", _circuits_long),
    Case("circuits-missing-columns", "pages/circuits.py", "lacks column",
         _upload("circ_upload", "circ_source", b"clean,corrupted\na,b\n")),
    Case("circuits-hostile-file-name", "pages/circuits.py", "",
         _upload("circ_upload", "circ_source", b"clean,corrupted,correct,wrong\nA B,A C, x, y\nA D,A E, x, y\n",
                 name="![x](http://127.0.0.1:9/p.png).csv")),
    Case("hypotheses-empty-file", "pages/hypotheses.py", "empty", _upload("hyp_upload", "hyp_source", b"\n\n")),
    Case("hypotheses-endpoint-host-not-allowed", "pages/hypotheses.py", "not allowed",
         _endpoint("hyp_llm_url", "hyp_llm_model", "hyp_run", "http://10.1.2.3:8080/v1")),
    Case("feature-map-corrupt-dashboard-meta", "pages/feature_map.py", "not valid json",
         _nothing, _damage_dashboards("meta.json", b'{"format": ')),
    Case("feature-map-truncated-dashboards", "pages/feature_map.py", "safetensors",
         _nothing, _damage_dashboards("latents.safetensors")),
    Case("explorer-labels-not-a-label-file", "pages/explorer.py", "labels.json",
         _nothing, _damage_dashboards("labels.json", b'{"latents": [1, 2]}')),
    Case("steering-eval-judge-host-not-allowed", "pages/steering_eval.py", "not allowed", _eval_judge),
    Case("steering-preset-top-p-out-of-range", "pages/steering.py", "top_p", _preset(_preset_json(top_p=0.001))),
    Case("steering-preset-seed-out-of-range", "pages/steering.py", "seed", _preset(_preset_json(seed=2**40))),
    Case("steering-preset-corrupt-json", "pages/steering.py", "json", _preset('{"format": "saelab.steering_preset",')),
    Case("steering-preset-not-a-preset", "pages/steering.py", "must be a json object", _preset("[1, 2]")),
]  # fmt: skip

CLI_CASES = [
    Case("cli-dashboards-missing-sae", "cli", "no sae folder", lambda env: ["dashboards", "--sae", str(env.root / "nope")]),
    Case("cli-dashboards-truncated-weights", "cli", "not a readable safetensors",
         lambda env: ["dashboards", "--sae", str(_truncated_weights(env)), "--no-labels"]),
    Case("cli-eval-wrong-width", "cli", "64", lambda env: ["eval", "--sae", str(_wrong_width(env)), "--model", "tiny"]),
    Case("cli-train-missing-harvest", "cli", "no harvest", lambda env: ["train", "--acts", str(env.folder("empty"))]),
    Case("cli-harvest-unknown-hook", "cli", "hook", lambda env: ["harvest", "--model", "tiny", "--hooks", "blocks.99.x",
                                                                 "--tokens", "256", "--out", str(env.root / "h")]),
    Case("cli-probe-utf16-duplicate-columns", "cli", "duplicate column",
         lambda env: ["probe", "--csv", _csv(env, "d.csv", "text,label,label\na,1,0\nb,0,1\n".encode("utf-16")),
                      "--text-col", "text", "--target-col", "label", "--model", "tiny", "--source", "tfidf"]),
    Case("cli-probe-inf-target", "cli", "infinite",
         lambda env: ["probe", "--csv", _csv(env, "n.csv", _numeric_target("-inf")), "--text-col", "text",
                      "--target-col", "score", "--kind", "numeric", "--source", "tfidf"]),
    Case("cli-circuits-long-prompts", "cli", "limited to 128 tokens",
         lambda env: ["circuits", "--model", "tiny", "--csv", _csv(env, "c.csv", (
             "clean,corrupted,correct,wrong\n" + " ".join(["w"] * 300) + " Mary," + " ".join(["w"] * 300)
             + " John, Mary, John\nA B,A C, x, y\n").encode())]),
    Case("cli-hypotheses-one-column", "cli", "needs a text column",
         lambda env: ["hypotheses", "--csv", _csv(env, "h.csv", b"text\na\nb\n"), "--text-col", "text",
                      "--target-col", "y"]),
    Case("cli-steer-preset-out-of-range", "cli", "top_p",
         lambda env: ["steer", "--model", "tiny", "--preset", _csv(env, "p.json", _preset_json(top_p=5.0).encode())]),
    Case("cli-steer-eval-judge-host-not-allowed", "cli", "not allowed",
         lambda env: ["steer-eval", "--model", "tiny", "--methods", "prompting", "--judge-url", "http://10.9.9.9/v1",
                      "--judge-model", "m"]),
    Case("cli-detox-bad-tiers", "cli", "could not read the numbers",
         lambda env: ["detox", "--model", "tiny", "--sae", str(env.sae), "--tiers", "abc"]),
    Case("cli-llm-labels-host-not-allowed", "cli", "not allowed",
         lambda env: ["llm-labels", "--sae", str(env.sae), "--base-url", "http://169.254.169.254/v1",
                      "--llm-model", "m"]),
]  # fmt: skip

CASES = PAGE_CASES + CLI_CASES


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_handle) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs-template")
    build_feature_root(root, tiny_handle.tokenizer)
    return root


def _one_line(message: str, expect: str) -> None:
    assert "Traceback" not in message and "\n" not in message.strip(), message
    assert expect in message.lower(), f"expected {expect!r} in {message!r}"


def _no_temporaries(*folders: Path) -> None:
    left = [p for f in folders for p in f.rglob(".*.tmp")]
    assert not left, f"half-written files left: {left}"


def _escaped(at: AppTest) -> None:
    html = page_html(at).lower()
    assert "<script" not in html and 'href="javascript:' not in html
    for md in [*at.markdown, *at.caption, *at.error, *at.warning, *at.info]:
        assert "](http" not in md.value.replace("\\", "") or "\\]" in md.value, md.value  # markdown links escaped


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line_and_the_app_keeps_answering(case, template, tmp_path, monkeypatch, capsys):
    features = tmp_path / "features"
    shutil.copytree(template, features)
    env = Env(root=tmp_path, sae=features / "default")
    roots = {"overview-outside-allowed-roots": str(features), "overview-root-path": None}.get(case.id, str(tmp_path))
    if roots is None:
        monkeypatch.delenv("SAELAB_ALLOWED_ROOTS", raising=False)
    else:
        monkeypatch.setenv("SAELAB_ALLOWED_ROOTS", roots)
    monkeypatch.delenv("SAELAB_ALLOWED_HOSTS", raising=False)
    if case.surface == "cli":
        from saelab.cli import main

        monkeypatch.setenv("SAELAB_FEATURES", str(features))
        rc = main(case.act(env))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err, err
        assert err[-1].startswith("saelab "), err[-1]
        _one_line(err[-1], case.expect)
    else:
        if case.before is not None:
            case.before(env)
        at = tiny_app(monkeypatch, features, timeout=180)
        at.switch_page(case.surface)
        at.run()
        case.act(at, env)
        assert not at.exception, [e.value for e in at.exception]
        shown = [e.value.replace("\\", "") for e in [*at.error, *at.warning, *at.caption]]  # markdown escapes off
        if case.expect:
            hits = [m for m in shown if case.expect in m.lower()]
            assert hits, f"no message with {case.expect!r}; shown: {shown}"
            _one_line(hits[0], case.expect)
        _escaped(at)
        at.switch_page("pages/overview.py").run()  # the app still answers
        assert not at.exception and at.title and at.title[0].value == "SAE Lab"
    _no_temporaries(tmp_path)
