"""Local server processes, shared by `frontend`, `export`, `benchmarks` and the tests:
start one that dies with its parent, stop it, find free ports, and wait until it answers.

Every wait has a deadline and fails fast, with a message that says what it waited for, as
soon as the process it waits on has ended. Standard library only (redis is imported by the
one function that talks to it), and it imports none of the packages that use it, so that
`frontend` and `export` can both depend on it and still not on each other.

- `procs.ports`: free_port, distinct_free_ports, port_in_use, wait_port_free
- `procs.process`: with_parent_death_signal, start, start_python, stop, exited
- `procs.wait`: WaitError, wait_for, http_ok, wait_http
- `procs.redis_server`: redis_server_command, start_redis, wait_redis
- `procs.postgres_server`: start_postgres, wait_postgres, kill_postgres, stop_postgres,
  simple_query
"""
