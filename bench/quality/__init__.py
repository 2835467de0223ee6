"""Offline recommendation quality on real data, each algorithm beside a baseline.

For each protocol (a data set and an evaluation split) the benchmark splits once,
trains every algorithm of ``jobs.evaluation`` on the training part, fits the
``implicit`` library's ALS on the same training part with the same confidences and
hyper-parameters, and scores all of them with the same code
(``jobs.evaluation.score_algorithms``). It reports each algorithm against the
global popularity baseline, and the job's ALS against implicit's in quality and wall
time.

Modules: ``datasets`` (Taobao, MovieLens into interaction and product frames),
``protocols`` (what is split how, and one protocol's run), ``implicit_als`` (the
reference ALS), ``report`` (tables, ratios, the JSON and Markdown files),
``environment`` (machine, versions, commit), ``timing``.

Run: ``python -m bench.quality --help``.
"""
