"""The side-by-side benchmark: the pipeline against the WhisperX CLI on generated films (issues 13, 14).

    python -m bench [--quick | --long] [--repeats N] [--report PATH] [--work DIR]

`films` makes the films and their ground truth, `runs` runs both sides and measures wall time
and the peak memory of the process tree, `scoring` compares subtitles with the truth,
`report` prints the table and writes the JSON report, `run` ties them together.
"""
