"""Deploying as an operator does: what Heroku's buildpack installs, what app.json declares, and what
each process of the Procfile says when its configuration or its database is not right."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from models.personal_data import derived_data_key
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.support.members import add_members, make_member

VENV_BIN = Path(sys.executable).parent
AT = "2027-02-28T10:00:00Z"


def procfile_processes() -> set[str]:
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    return {line.split(":", 1)[0].strip() for line in lines if line.strip() and not line.startswith("#")}


def readme_variables() -> dict[str, str]:
    """Each variable of the README's configuration table, with the text of its row."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell):
                rows[name] = line
    return rows


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("LOYALTY_", "DATABASE_URL", "REDIS_URL", "SMTP_URL", "TWILIO_", "MAILCHIMP_", "PORT"))}


def run(env: dict, *command: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), env={**clean_environ(), **env}, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def loyalty(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run(env, str(VENV_BIN / "loyalty"), *args)


def worker(env: dict) -> subprocess.CompletedProcess:
    """The Procfile's worker, as it runs: two processes of dramatiq importing workers.main."""
    return run({**env, "REDIS_URL": REDIS_URL}, str(VENV_BIN / "dramatiq"), "workers.main", "--processes", "2",
               "--threads", "2", "--queues", "campaigns", "deliveries", "events", "--skip-logging",
               "--worker-shutdown-timeout", "25000", "--worker-fork-timeout", "10000", timeout=60)


def one_sentence(result: subprocess.CompletedProcess) -> str:
    """The refusal's one line of stderr (nothing else anywhere), after a non-zero exit."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stdout == "", result.stderr + result.stdout
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    return lines[0].removeprefix("error: ")


# -- item 1: what the buildpack installs, what app.json declares ---------------------------------------------------


def test_a_fresh_virtualenv_installs_from_requirements_txt_alone_and_runs_the_cli(tmp_path):
    """What Heroku's Python buildpack does with the pushed files: `pip install -r requirements.txt`."""
    app = tmp_path / "app"
    pushed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in pushed:
        if (REPO_ROOT / name).is_file():
            (app / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, app / name)
    version = (app / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version), "the buildpack reads a major version like 3.11"
    required = tomllib.loads((app / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11" and int(version.split(".")[1]) >= 11

    # A fresh virtual environment gets what `pip install -r requirements.txt` installs, and nothing else.
    # Two shortcuts that change nothing of what lands in it (they took 20 of its 40 s of CPU): the venv
    # is made without a pip of its own (this environment's pip installs into it, `--python`), and the
    # files are not byte-compiled (`--no-compile`; Python compiles what it imports).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--quiet", "--disable-pip-version-check", "--no-compile", "-r", "requirements.txt"],
                             cwd=app, capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in clean_environ().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    help_text = subprocess.run([str(venv / "bin" / "loyalty", ), "--help"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0, help_text.stderr
    assert "Usage: loyalty" in help_text.stdout and "migrate" in help_text.stdout
    worker_help = subprocess.run([str(venv / "bin" / "dramatiq"), "--help"], env=env, capture_output=True, text=True)
    assert worker_help.returncode == 0  # the worker process's command is installed too

    # Every file of our packages is installed (templates, pages, migrations, the program), not only the code.
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import loyalty, pathlib; "
                                "print(pathlib.Path(loyalty.__file__).parent.parent)"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip())
    assert site != app and site.name == "site-packages"
    packages = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    ours = [name for name in pushed if name.split("/")[0] + "*" in packages and "/" in name]
    missing = [name for name in ours if (app / name).is_file() and not (site / name).is_file()]
    assert ours and missing == []


def test_app_json_declares_every_process_of_the_procfile_and_every_variable_the_readme_requires():
    app = json.loads((REPO_ROOT / "app.json").read_text())
    release, *processes = sorted(procfile_processes(), key=lambda name: name != "release")
    assert release == "release"  # Heroku runs it at each deploy, before the new dynos start
    assert set(app["formation"]) == set(processes) == {"web", "worker", "clock"}
    assert all(app["formation"][name]["quantity"] >= 1 for name in processes)
    assert app["formation"]["clock"]["quantity"] == 1  # exactly one clock per deployment

    attached = {addon["plan"].split(":")[0]: addon.get("as") for addon in app["addons"]}
    assert attached == {"heroku-postgresql": "DATABASE", "heroku-redis": "REDIS"}  # DATABASE_URL and REDIS_URL

    variables = readme_variables()
    required = {name for name, row in variables.items() if "required" in row.lower()}
    assert {"LOYALTY_SECRET", "LOYALTY_PUBLIC_URL", "LOYALTY_EMAIL_FROM"} <= required
    for name in required:
        assert name in app["env"], f"{name} is required by the README but app.json does not ask for it"
        declared = app["env"][name]
        assert declared.get("generator") == "secret" or declared.get("required", True), name
    assert app["env"]["LOYALTY_SECRET"]["generator"] == "secret"
    assert set(app["env"]) <= set(variables), "app.json names a variable the README does not document"


# -- item 2: production never runs on development defaults ---------------------------------------------------------


@pytest.mark.parametrize("missing, named", [("LOYALTY_PUBLIC_URL", "LOYALTY_PUBLIC_URL is not set"),
                                            ("LOYALTY_EMAIL_FROM", "LOYALTY_EMAIL_FROM is not set")])
def test_with_a_database_the_processes_refuse_to_start_without_a_public_url_or_a_sender(env, missing, named):
    without = {k: v for k, v in env.items() if k != missing}
    assert one_sentence(loyalty(without, "web")).startswith(named)
    assert one_sentence(worker(without)).startswith(named)
    insecure = {**env, "LOYALTY_PUBLIC_URL": "http://loyalty.shop.example"}
    assert one_sentence(loyalty(insecure, "clock")).startswith("LOYALTY_PUBLIC_URL must be an https URL")


# -- item 3: every process says the same one sentence ---------------------------------------------------------------


@pytest.mark.parametrize("variable, value, sentence", [
    ("LOYALTY_TICK_MINUTES", "abc", "LOYALTY_TICK_MINUTES must be a whole number, not 'abc'."),
    ("LOYALTY_LOG_LEVEL", "loud", "LOYALTY_LOG_LEVEL 'loud' is not a level; use one of debug, info, warning, error."),
    ("SMTP_URL", "smtp://127.0.0.1:25?timeout=nan", "SMTP_URL has the timeout 'nan'"),
])
def test_the_worker_the_clock_the_web_and_the_cli_print_the_same_one_sentence(env, variable, value, sentence):
    bad = {**env, variable: value}
    said = {
        "worker": one_sentence(worker(bad)),
        "clock": one_sentence(loyalty(bad, "clock")),
        "web": one_sentence(loyalty(bad, "web")),
        "cli": one_sentence(loyalty(bad, "preview", "birthday", "--at", AT)),
    }
    assert len(set(said.values())) == 1, said
    assert said["worker"].startswith(sentence)


def test_port_is_checked_for_the_web_process_as_the_procfile_runs_it(env):
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    web = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("web:"))
    path = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    refused = run({**env, **path, "PORT": "eighty"}, "sh", "-c", web)
    assert one_sentence(refused) == "PORT must be a number from 1 to 65535, not 'eighty'."


def test_the_clock_ticks_at_the_period_the_settings_read(env):
    from core.settings import load_settings
    from schedules.clock import build_scheduler

    settings = load_settings({**env, "LOYALTY_TICK_MINUTES": "7"})
    scheduler = build_scheduler(settings, tick_minutes=settings.tick_minutes)
    assert scheduler.get_job("campaigns.tick").trigger.interval.total_seconds() == 7 * 60


# -- item 5: LOYALTY_SECRET and the keys derived from it, checked against stored rows at start ---------------------


@pytest.fixture
def stored_member(pg_sessions):
    """A member written with the keys derived from the test secret, as a deployment stores them."""
    add_members(pg_sessions, make_member("K1", phone="+33612345678", sms_opt_in=True))


def test_a_changed_secret_is_named_at_start_with_the_keys_derived_from_it(env, stored_member):
    changed = {**env, "LOYALTY_SECRET": "another-secret-0123456789abcdef"}
    sentence = one_sentence(loyalty(changed, "preview", "birthday", "--at", AT))
    assert sentence.startswith("LOYALTY_SECRET changed and LOYALTY_DATA_KEYS/LOYALTY_LOOKUP_KEY are derived from it")
    assert one_sentence(worker(changed)) == sentence
    assert loyalty(env, "preview", "birthday", "--at", AT).returncode == 0  # the right secret starts


def test_changed_data_keys_are_named_at_start(env, stored_member):
    sentence = one_sentence(loyalty({**env, "LOYALTY_DATA_KEYS": Fernet.generate_key().decode()},
                                    "preview", "birthday", "--at", AT))
    assert sentence.startswith("LOYALTY_DATA_KEYS changed: the stored members' personal data was encrypted with a key")


def test_a_changed_lookup_key_is_named_at_start_and_keys_rotate_repairs_it(env, stored_member):
    rotated = {**env, "LOYALTY_LOOKUP_KEY": "a-new-lookup-key-0123456789"}
    sentence = one_sentence(loyalty(rotated, "preview", "birthday", "--at", AT))
    assert sentence.startswith("LOYALTY_LOOKUP_KEY changed: the stored look-up hashes")
    repaired = loyalty(rotated, "keys", "rotate")
    assert repaired.returncode == 0, repaired.stderr
    assert loyalty(rotated, "preview", "birthday", "--at", AT).returncode == 0


def test_a_changed_secret_with_data_keys_pinned_names_the_secret_for_the_lookup_hashes(env, stored_member):
    pinned = {**env, "LOYALTY_SECRET": "another-secret-0123456789abcdef",
              "LOYALTY_DATA_KEYS": derived_data_key(env["LOYALTY_SECRET"])}
    sentence = one_sentence(loyalty(pinned, "preview", "birthday", "--at", AT))
    assert sentence.startswith("LOYALTY_SECRET changed and LOYALTY_DATA_KEYS/LOYALTY_LOOKUP_KEY are derived from it")
    assert "look-up hashes" in sentence
