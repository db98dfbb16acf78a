""" The config-reload article's Zato 2.0 code runs unchanged: `zato.common.broker_message.SERVICE`,
`zato.common.util.get_config` and `new_cid`, `self.server.repo_location` and `user_config`, and
`self.broker_client.publish` of `SERVICE.PUBLISH`, which runs a service in every worker. """

from __future__ import annotations

import logging
import time

import pytest

from core_test_helpers import admin_post
from zato.testing import ServerProcess, create_test_server_dir, run_server, set_config_value

# The article's code as printed; the web page lost three pieces of it (a call to self.logger.info,
# the name of the service to publish and the publish call itself), restored here as in Zato 2.0
ARTICLE = """\
# -*- coding: utf-8 -*-

from __future__ import absolute_import, division, print_function, unicode_literals

# Zato
from zato.common.broker_message import SERVICE
from zato.common.util import get_config, new_cid
from zato.server.service import Service

class _Reload(Service):
    name = 'util.config._reload'

    def handle(self):

        server_conf = get_config(self.server.repo_location, 'server.conf')

        self.server.user_config.update(server_conf.user_config_items)
        self.logger.info('User config reloaded')

class Reload(Service):
    name = 'util.config.reload'

    def handle(self):
        msg = {}
        msg['action'] = SERVICE.PUBLISH.value
        msg['service'] = _Reload.name
        msg['payload'] = ''
        msg['cid'] = new_cid()

        self.broker_client.publish(msg)
"""

PROBE = """\
import os
from zato.server.service import Service

class Probe(Service):
    name = 'test.config.probe'

    def handle(self):
        crm = self.config.get('crm')
        self.response.payload = {'pid': os.getpid(), 'region': crm.sales.region if crm else None,
                                 'greeting': self.config.user.demo.greeting}

class Misuse(Service):
    name = 'test.broker.misuse'

    def handle(self):
        from zato.common.broker_message import SERVICE
        out = {}
        for label, msg in (('edit', {'action': SERVICE.EDIT.value}),
                           ('no_service', {'action': SERVICE.PUBLISH.value, 'service': 'no.such.service'}),
                           ('payload', {'action': SERVICE.PUBLISH.value, 'service': 'test.config.probe',
                                        'payload': object()})):
            try:
                self.broker_client.publish(msg)
            except (TypeError, ValueError) as exc:
                out[label] = str(exc)
        self.response.payload = out
"""


def both_workers(address: str, timeout: float = 10.0, until=None) -> dict[int, dict]:
    """ What the probe answers in each of the two workers (polled until `until(answers)`). """
    started = time.monotonic()
    seen: dict[int, dict] = {}
    while len(seen) < 2 or (until is not None and not until(seen)):
        out = admin_post(address, "test.config.probe")
        seen[out["pid"]] = out
        assert time.monotonic() - started < timeout, f"after {timeout} s the workers answer {seen}"
    return seen


def test_the_articles_reload_reaches_every_worker(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    (base / "pickup" / "config_reload.py").write_text(ARTICLE, "utf-8")
    (base / "pickup" / "probe.py").write_text(PROBE, "utf-8")
    with ServerProcess(base) as server:
        assert all(answer["region"] is None for answer in both_workers(server.address).values())

        # A new user config file, named in server.conf: no worker reads it by itself ...
        (base / "config" / "crm.conf").write_text("[sales]\nregion = EMEA\n", "utf-8")
        set_config_value(base, "user_config", "crm", "crm.conf")
        time.sleep(1.5)  # three times the user_config plugin's polling of the files it knows
        assert all(answer["region"] is None for answer in both_workers(server.address).values())

        # ... until the article's service is invoked once, through either worker
        assert admin_post(server.address, "util.config.reload") == b""
        answers = both_workers(server.address, until=lambda seen: all(a["region"] == "EMEA" for a in seen.values()))
        assert all(answer["greeting"] == "Hello" for answer in answers.values())  # user.conf is there too
        log, started = base / "logs" / "server.log", time.monotonic()
        while log.read_text("utf-8").count("User config reloaded") < 2:  # it logs after the update
            assert time.monotonic() - started < 5, "the published service did not log in each worker"
            time.sleep(0.05)
        time.sleep(0.3)
        assert log.read_text("utf-8").count("User config reloaded") == 2, "once in each worker, not more"


async def test_publishing_what_is_not_carried_says_what_to_do(server_dir):
    (server_dir / "pickup" / "probe.py").write_text(PROBE, "utf-8")
    async with run_server(server_dir) as server:
        out = await server.invoke("test.broker.misuse")
    assert "action '101800' (SERVICE_EDIT) is not carried here; only SERVICE.PUBLISH" in out["edit"]
    assert "no service named 'no.such.service' is deployed" in out["no_service"]
    assert "must be JSON-serialisable" in out["payload"]


async def test_publish_runs_the_service_in_a_single_worker_server_too(server_dir):
    import trio
    (server_dir / "pickup" / "config_reload.py").write_text(ARTICLE, "utf-8")
    async with run_server(server_dir) as server:
        (server_dir / "config" / "crm.conf").write_text("[sales]\nregion = APAC\n", "utf-8")
        set_config_value(server_dir, "user_config", "crm", "crm.conf")
        await server.invoke("util.config.reload")
        started = time.monotonic()
        while "crm" not in server.user_config:  # the published service runs in the background
            assert time.monotonic() - started < 5
            await trio.sleep(0.01)
        assert server.user_config.crm.sales.region == "APAC"


# ################################################################################################
# get_config as Zato's


def test_get_config_keeps_zatos_signature_and_behaviour(tmp_path, caplog):
    from zato.common.util import get_config as old_path
    from zato.common.util.api import get_config, new_cid
    assert old_path is get_config
    assert len(new_cid()) == 24 and new_cid() != new_cid()

    (tmp_path / "server.conf").write_text("[main]\nport = 17010\n[user_config]\nuser = user.conf\nlost = lost.conf\n")
    (tmp_path / "user.conf").write_text("[demo]\ngreeting = Hello\nitems = a, b\n")
    with caplog.at_level(logging.WARNING, "zato.common.util"):
        conf = get_config(str(tmp_path), "server.conf")
    assert conf.main.port == "17010"
    assert conf.user_config_items.user.demo.greeting == "Hello"
    assert conf.user_config_items.user.demo["items"] == ["a", "b"]
    assert "lost" not in conf.user_config_items and "user config 'lost'" in caplog.text and "lost.conf" in caplog.text
    assert set(conf) == {"main", "user_config", "user_config_items"}

    plain = get_config(tmp_path, "server.conf", bunchified=False, needs_user_config=False)
    assert type(plain) is dict and type(plain["main"]) is dict and "user_config_items" not in plain

    caplog.clear()
    with caplog.at_level(logging.WARNING, "zato.common.util"):
        assert get_config(tmp_path, "nope.conf") == {}
    assert "nope.conf" in caplog.text and "file not found" in caplog.text
    assert get_config(tmp_path, "nope.conf", require_exists=False, log_exception=False) == {}
    from zato.config import ConfigError
    with pytest.raises(ConfigError, match="nope.conf: file not found"):
        get_config(tmp_path, "nope.conf", raise_on_error=True)
    assert get_config(None, "ignored", conf_location=tmp_path / "user.conf").demo.greeting == "Hello"
