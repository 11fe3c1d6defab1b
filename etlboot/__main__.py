"""`python -m etlboot` (what `./etl` runs): the tasks of tasks.py as the `./etl` program."""

from .program import main

main()
