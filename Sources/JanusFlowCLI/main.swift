print("janusflow")
