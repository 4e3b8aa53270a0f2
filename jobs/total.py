"""Adds up its numbers and its parents' totals; reports progress; returns the total."""

from perseid_jobs import job


@job(max_duration="1m")
def run(task):
    numbers = task.args.get("numbers", [])
    total = sum(numbers)
    for n, _ in enumerate(numbers, 1):
        task.progress(n / len(numbers), f"{n} of {len(numbers)} added")
    for parent, result in task.parent_results.items():  # fan-in: parent id -> its result
        total += result["total"] if result else 0
        task.logger.info("parent", extra={"parent": parent, "result": result})
    return {"total": total}
