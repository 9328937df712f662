"""Browse an evaluation run from the demo server: GET /eval (table, chart, examples, audio by id only).

run.py      what the page shows: the run's per-task table, each example's rows, its clip by example id
routes.py   the /eval routes, as a `Mount` for the core server (speechllm.serve.app.create_app)
options.py  `speechllm serve|demo --eval-run DIR [--eval-suite DIR]`, handed to the serve command by
            speechllm/cli.py (the core never imports this package)
eval.html   the page
"""
