"""For the data-flow tests (results, parent_results, progress), in a reused process.

``args.mode``: "return" returns ``args.value``; "big" a string of ``args.size`` characters;
"object" a value JSON cannot hold; "parents" its parents' results; "progress" reports
``args.calls`` progress values in a loop (``args.pause`` s apart), then returns how long
they took.
"""

import time

from perseid_jobs import job


@job(max_duration="60s", max_tasks_per_process=20)
def run(task):
    mode = task.args.get("mode", "return")
    if mode == "big":
        return "x" * int(task.args["size"])
    if mode == "object":
        return {"when": object()}
    if mode == "parents":
        return {"saw": task.parent_results}
    if mode == "progress":
        calls = int(task.args["calls"])
        started = time.monotonic()
        pause = float(task.args.get("pause", 0))  # spreads the calls over time
        for n in range(calls):
            task.progress((n + 1) / calls, f"step {n + 1} of {calls}")
            if pause:
                time.sleep(pause)
        return {"seconds": time.monotonic() - started}
    return task.args.get("value")
