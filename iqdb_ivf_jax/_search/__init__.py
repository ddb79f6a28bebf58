"""Search kernels and the search runner: query-major and list-major paths, their host
plan, and the top-k selection they share."""
