from hullft.report.cli import main

main()
