from hullft.report.tables import main

main()
