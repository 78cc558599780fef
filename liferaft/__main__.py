from liferaft.cli import main

main()
