"""The hostile-case harness run by benchmarks/robustness.py.

files and snippets: the hostile material (bytes-level tampering; the code child processes run);
children: starting child processes; verdicts: judging what they did; world: the data and artifacts
every case starts from; case: what a case is; tamper, tracebacks, inputs, crash: the cases of each
kind; runner: running the cases; report: the table and the RESULTS.md section.
"""
