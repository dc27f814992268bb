from tests.worker_fixtures import jobs_for, keyless_settings, local_dev_settings, start_host

__all__ = ["jobs_for", "keyless_settings", "local_dev_settings", "start_host"]
