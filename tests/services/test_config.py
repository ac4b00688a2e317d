"""Service configuration from the environment."""

from __future__ import annotations

import pytest

from services.core.config import Config, ConfigError, LoadSettings, RedisSettings


def test_defaults():
    cfg = Config.from_env({})
    assert cfg.redis == RedisSettings()
    assert cfg.redis.url == "redis://localhost:6379/0"
    assert (cfg.k_neighbors, cfg.n_rec, cfg.max_n_rec) == (10, 10, 1000)
    assert cfg.cold_start == "popular" and cfg.poll_interval == 0.5
    assert cfg.model is None and cfg.tf_serving_url is None


def test_environment_then_overrides():
    env = {"REDIS_URL": "redis://cache:6380/2", "REDIS_PASSWORD": "pw",
           "LIBRECO_K_NEIGHBORS": "30", "LIBRECO_N_REC": "20", "LIBRECO_MAX_N_REC": "5000",
           "LIBRECO_COLD_START": "404", "LIBRECO_POLL_INTERVAL": "0.25",
           "LIBRECO_LOG_LEVEL": "debug", "LIBRECO_MODEL": "item_cf",
           "TF_SERVING_URL": "http://tf:8501/", "LIBRECO_TF_TIMEOUT": "1.5"}
    cfg = Config.from_env(env, overrides={"LIBRECO_N_REC": 7})
    assert cfg.redis.url == "redis://cache:6380/2" and cfg.redis.password == "pw"
    assert (cfg.k_neighbors, cfg.n_rec, cfg.max_n_rec) == (30, 7, 5000)
    assert cfg.cold_start == "404" and cfg.poll_interval == 0.25
    assert cfg.log_level == "DEBUG" and cfg.model == "item_cf"
    assert cfg.tf_serving_url == "http://tf:8501" and cfg.tf_timeout == 1.5


@pytest.mark.parametrize(("name", "value"), [
    ("REDIS_URL", "http://localhost:6379"),
    ("REDIS_URL", "redis://:6379"),
    ("REDIS_URL", "redis://host:port/0"),
    ("LIBRECO_REDIS_MODE", "replicated"),
    ("LIBRECO_REDIS_SENTINELS", "host-without-port"),
    ("LIBRECO_REDIS_TIMEOUT", "-1"),
    ("LIBRECO_K_NEIGHBORS", "0"),
    ("LIBRECO_K_NEIGHBORS", "ten"),
    ("LIBRECO_N_REC", "1.5"),
    ("LIBRECO_N_REC", "2000"),
    ("LIBRECO_MAX_N_REC", "999"),
    ("LIBRECO_COLD_START", "random"),
    ("LIBRECO_POLL_INTERVAL", "2"),
    ("LIBRECO_POLL_INTERVAL", "-0.1"),
    ("LIBRECO_LOG_LEVEL", "LOUD"),
    ("LIBRECO_MODEL", "two words"),
    ("TF_SERVING_URL", "tf:8501"),
    ("LIBRECO_TF_TIMEOUT", "0"),
])
def test_invalid_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as err:
        Config.from_env({name: value})
    assert name in str(err.value)
    assert repr(value) in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        Config.from_env({"LIBRECO_N_REC": "x", "LIBRECO_COLD_START": "y", "REDIS_URL": "z"})
    assert len(err.value.problems) == 3
    for name in ("LIBRECO_N_REC", "LIBRECO_COLD_START", "REDIS_URL"):
        assert name in str(err.value)


def test_sentinel_settings():
    with pytest.raises(ConfigError, match="LIBRECO_REDIS_SENTINELS"):
        RedisSettings.from_env({"LIBRECO_REDIS_MODE": "sentinel"})
    s = RedisSettings.from_env({"LIBRECO_REDIS_MODE": "sentinel",
                                "LIBRECO_REDIS_SENTINELS": "a:26379, b:26380",
                                "LIBRECO_REDIS_SENTINEL_MASTER": "main"})
    assert s.sentinels == (("a", 26379), ("b", 26380)) and s.sentinel_master == "main"


def test_max_n_rec_may_be_raised_above_1000():
    assert Config.from_env({"LIBRECO_MAX_N_REC": "20000", "LIBRECO_N_REC": "5000"}).n_rec == 5000


def test_load_settings():
    assert LoadSettings.from_env({}) == LoadSettings(60.0, 3600.0, 1000)
    s = LoadSettings.from_env({"LIBRECO_VERSION_GRACE": "0", "LIBRECO_STALE_AFTER": "10",
                               "LIBRECO_LOAD_BATCH": "50"})
    assert (s.grace_period, s.stale_after, s.batch) == (0.0, 10.0, 50)
    with pytest.raises(ConfigError, match="LIBRECO_LOAD_BATCH"):
        LoadSettings.from_env({"LIBRECO_LOAD_BATCH": "0"})
