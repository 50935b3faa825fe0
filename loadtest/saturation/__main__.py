from loadtest.saturation.cli import main

main()
