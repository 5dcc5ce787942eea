from upgrader.cli.script import main

main()
