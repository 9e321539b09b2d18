from f1.cli import main

main()
