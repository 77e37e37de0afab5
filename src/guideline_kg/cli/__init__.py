"""The `guideline-kg` command line: parser, shared helpers and one module per subcommand."""
