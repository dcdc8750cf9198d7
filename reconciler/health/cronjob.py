"""CronJob: Suspended while suspended, Progressing while a run is active, Degraded
when its last scheduled run has not succeeded since; one never run is Healthy."""

from __future__ import annotations

import datetime

from reconciler.health.base import Health, Object, Status, check, spec, status


@check("batch", "CronJob")
def cronjob(obj: Object) -> Health:
    if spec(obj).get("suspend") is True:
        return Health(Status.SUSPENDED, "CronJob is suspended")
    st = status(obj)
    if st.get("active"):
        return Health(Status.PROGRESSING, "a scheduled run is active")
    scheduled, succeeded = _time(st.get("lastScheduleTime")), _time(st.get("lastSuccessfulTime"))
    if scheduled is None:
        return Health(Status.HEALTHY, "not scheduled yet")
    if succeeded is not None and succeeded >= scheduled:
        return Health(Status.HEALTHY, "the last scheduled run succeeded")
    return Health(Status.DEGRADED, "the last scheduled run did not succeed")


def _time(value: object) -> datetime.datetime | None:
    # The API writes RFC 3339 in UTC; anything else is treated as absent.
    try:
        return datetime.datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
