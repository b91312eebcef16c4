// FleetEngine placeholder
