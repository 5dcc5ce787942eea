from upgrader.cli.main import main

main()
