from mixserve.cli import main

main()
